package imap

import (
	"strings"
	"testing"
)

// A logged-in session whose back-end an operator disables (or a reload
// removes) ends with an untagged BYE, not a bare EOF: the client knows to
// reconnect.
func TestDisabledBackendSaysBye(t *testing.T) {
	b := startBackend(t, "mail1")
	pool := poolOf(b)
	c := loggedIn(t, start(t, &Frontend{Pool: pool}), "alice")
	c.Send("a2 SELECT INBOX")
	until(c, "a2")
	if n := pool.Backends[0].CloseSessions(); n != 1 {
		t.Fatalf("closed %d sessions, want 1", n)
	}
	if l := c.Line(); !strings.HasPrefix(l, "* BYE [UNAVAILABLE]") {
		t.Fatalf("after the back-end was taken out: %q, want * BYE [UNAVAILABLE]", l)
	}
}
