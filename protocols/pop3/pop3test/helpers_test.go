package pop3test

import (
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// dial connects to s for a raw conversation, with every read and write
// bounded by wiretest.Wait.
func dial(t *testing.T, s *Server) *wiretest.Conn {
	t.Helper()
	return wiretest.Dial(t, s.Addr)
}

// greeted dials s and reads its greeting.
func greeted(t *testing.T, s *Server) *wiretest.Conn {
	t.Helper()
	w := dial(t, s)
	w.Expect("+OK " + s.Name + " POP3 ready")
	return w
}

// loggedIn is greeted plus a USER/PASS login.
func loggedIn(t *testing.T, s *Server, user, pass string) *wiretest.Conn {
	t.Helper()
	w := greeted(t, s)
	w.Send("USER " + user)
	w.Expect("+OK")
	w.Send("PASS " + pass)
	w.Expect("+OK " + s.Name + ": " + user + " has ")
	return w
}

// multi reads a "+OK" multi-line response and returns its body lines as
// sent (still dot-stuffed), without the final ".".
func multi(w *wiretest.Conn) []string {
	w.T.Helper()
	w.Expect("+OK")
	var body []string
	for {
		line := w.Line()
		if line == "." {
			return body
		}
		body = append(body, line)
	}
}

// assertGoroutinesGone fails if, shortly after Close, any goroutine still
// runs the server's code.
func assertGoroutinesGone(t *testing.T) {
	t.Helper()
	wiretest.GoroutinesGone(t, "pop3test.(*Server)", "pop3test.(*session)", "testserver.(*", "testserver.holdSilently")
}
