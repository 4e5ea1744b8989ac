package smtp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// The size limit is advertised in SIZE, a declared size over it is
// refused at MAIL, and an undeclared one at the end of data, after which
// the back-end never gets the truncated message.
func TestMessageSizeLimit(t *testing.T) {
	backends, addrs := mtas(t, 1, nil)
	fe := newFrontend(addrs...)
	fe.Config.MaxMessageBytes = 100
	addr, _ := serve(t, fe)

	c := greeted(t, addr)
	if ehlo := c.cmd("EHLO client.example", "250 "); !strings.Contains(ehlo, "SIZE 100") {
		t.Fatalf("EHLO reply lacks SIZE 100:\n%s", ehlo)
	}
	c.cmd("MAIL FROM:<alice@example.org> SIZE=200", "552 5.3.4 ")
	c.mail("alice@example.org", "bob@example.net", strings.Repeat("x", 150), "552 5.3.4 ")
	c.expect("421 4.3.0 ") // the back-end's half-sent DATA was dropped
	c.expectClosed()
	if n := len(backends[0].Messages()); n != 0 {
		t.Fatalf("back-end recorded %d messages", n)
	}
}

// The smallest SIZE of the back-ends is the one advertised, and DSN and
// SMTPUTF8 only while every back-end seen offers them.
func TestExtensionsFollowEveryBackend(t *testing.T) {
	rich := startFake(t, &fakeMTA{Extensions: []string{"SIZE 5000", "DSN", "SMTPUTF8", "8BITMIME"}})
	poor := startFake(t, &fakeMTA{Extensions: []string{"SIZE 3000"}})
	fe := newFrontend(rich, poor)
	addr, _ := serve(t, fe)

	ehlo := greeted(t, addr)
	first := ehlo.cmd("EHLO client.example", "250 ")
	for _, want := range []string{"SIZE 5000", "DSN", "SMTPUTF8"} {
		if !strings.Contains(first, want) {
			t.Errorf("before the poor back-end was seen, EHLO lacks %s:\n%s", want, first)
		}
	}
	fe.Pool.Backends[0].SetAdmin(proxy.Draining) // the next session goes to the poor one
	second := greeted(t, addr).cmd("EHLO client.example", "250 ")
	fe.Pool.Backends[0].SetAdmin(proxy.Enabled)
	third := greeted(t, addr).cmd("EHLO client.example", "250 ")
	for name, r := range map[string]string{"on the poor back-end": second, "on the rich one later": third} {
		if !strings.Contains(r, "SIZE 3000") || strings.Contains(r, "DSN") || strings.Contains(r, "SMTPUTF8") {
			t.Errorf("%s, EHLO should offer SIZE 3000 and neither DSN nor SMTPUTF8:\n%s", name, r)
		}
	}
}

// Recipients beyond the limit get 452 4.5.3 (RFC 5321 section 4.5.3.1.8).
func TestMaxRecipients(t *testing.T) {
	_, addrs := mtas(t, 1, nil)
	fe := newFrontend(addrs...)
	fe.Config.MaxRecipients = 2
	addr, _ := serve(t, fe)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("MAIL FROM:<alice@example.org>", "250 ")
	c.cmd("RCPT TO:<a@example.net>", "250 ")
	c.cmd("RCPT TO:<b@example.net>", "250 ")
	c.cmd("RCPT TO:<c@example.net>", "452 4.5.3 ")
	c.data("Hello.", "250 ")
}

// A line over the limit ends the session with 500.
func TestLineTooLong(t *testing.T) {
	_, addrs := mtas(t, 1, nil)
	fe := newFrontend(addrs...)
	fe.Config.MaxLineLength = 512
	addr, _ := serve(t, fe)
	c := greeted(t, addr)
	c.cmd("EHLO "+strings.Repeat("a", 600), "500 5.4.0 ")
	c.expectClosed()
}

// Malformed commands get 500 and the session goes on, until a flood of
// them closes it.
func TestErrorFlood(t *testing.T) {
	_, addrs := mtas(t, 1, nil)
	addr, _ := serve(t, newFrontend(addrs...))
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("BOGUS", "501 5.5.2 ")
	c.cmd("NOOP", "250 ") // still fine
	c.cmd("XYZZY plugh", "501 5.5.2 ")
	c.cmd("FOOO", "500 5.5.2 ")
	c.Send("BARR")
	c.expect("500 5.5.2 ")
	c.expect("500 5.5.1 Too many errors")
	c.expectClosed()
}

// Refused recipients count as errors too: a dictionary attack ends with
// 421 once the session had MaxErrors error replies.
func TestRejectionFlood(t *testing.T) {
	fe := newFrontend(startFake(t, &fakeMTA{Replies: map[string]string{"RCPT": "550 5.1.1 User unknown"}}))
	fe.Config.MaxErrors = 3
	addr, _ := serve(t, fe)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("MAIL FROM:<spammer@example.org>", "250 ")
	c.cmd("RCPT TO:<a@example.net>", "550 5.1.1 ")
	c.cmd("RCPT TO:<b@example.net>", "550 5.1.1 ")
	c.cmd("RCPT TO:<c@example.net>", "550 5.1.1 ")
	c.expect("421 4.7.0 gate.test Too many errors")
	c.expectClosed()
}

// A client that stops talking is told so after the command timeout.
func TestCommandTimeout(t *testing.T) {
	_, addrs := mtas(t, 1, nil)
	fe := newFrontend(addrs...)
	fe.Config.CommandTimeout = 200 * time.Millisecond
	addr, _ := serve(t, fe)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.expect("421 4.4.2 ")
	c.expectClosed()
}

// At shutdown an idle client hears 421 at once; one inside a transaction
// finishes it first, gets its 250, then the 421.
func TestShutdownSaysGoodbye(t *testing.T) {
	backends, addrs := mtas(t, 1, nil)
	addr, srv := serve(t, newFrontend(addrs...))

	idle := greeted(t, addr)
	idle.cmd("EHLO idle.example", "250 ")
	busy := greeted(t, addr)
	busy.cmd("EHLO busy.example", "250 ")
	busy.cmd("MAIL FROM:<alice@example.org>", "250 ")

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	idle.expect("421 4.3.2 gate.test Service shutting down")
	idle.expectClosed()

	busy.cmd("RCPT TO:<bob@example.net>", "250 ")
	busy.data("Hello.", "250 ")
	busy.expect("421 4.3.2 gate.test Service shutting down")
	busy.expectClosed()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := len(backends[0].Messages()); n != 1 {
		t.Fatalf("back-end got %d messages, want 1", n)
	}
}

// A client over its address's connection limit is told in SMTP.
func TestRefusePerIP(t *testing.T) {
	_, addrs := mtas(t, 1, nil)
	addr, _ := serveWith(t, &proxy.Server{Name: "smtp-test", Handler: newFrontend(addrs...), MaxPerIP: 1, Log: quiet})
	first := greeted(t, addr)
	second := dial(t, addr)
	second.expect("421 4.7.0 gate.test Too many connections from your address")
	second.expectClosed()
	first.cmd("QUIT", "221 ")
}

// An operator disabling the back-end (or a reload removing it) ends its
// live sessions, each with a 421: an idle one, and one in the middle of a
// message (which the back-end never accepted).
func TestBackendDisabledEndsSessions(t *testing.T) {
	_, addrs := mtas(t, 1, nil)
	fe := newFrontend(addrs...)
	addr, _ := serve(t, fe)
	idle := greeted(t, addr)
	idle.cmd("EHLO client.example", "250 ")
	mid := greeted(t, addr)
	mid.cmd("EHLO client.example", "250 ")
	mid.cmd("MAIL FROM:<a@client.example>", "250 ")
	mid.cmd("RCPT TO:<b@example.com>", "250 ")
	mid.cmd("DATA", "354 ")
	mid.Send("Subject: half a message")
	if n := fe.Pool.Backends[0].CloseSessions(); n != 2 {
		t.Fatalf("closed %d sessions, want 2", n)
	}
	idle.expect("421 4.3.2 gate.test Service not available")
	idle.expectClosed()
	mid.Send(".")
	mid.expect("421 4.4.2 ")
	mid.expectClosed()
}
