package smtp

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// In relay mode a client's XCLIENT and XFORWARD never reach the back-end:
// they are refused with a 5xx (go-smtp's 501) and logged, and the session
// goes on.
func TestRelayRefusesIdentityCommands(t *testing.T) {
	fake := &fakeMTA{Extensions: []string{"XCLIENT ADDR NAME", "XFORWARD ADDR NAME", "8BITMIME"}}
	var logs wiretest.Logs
	fe := newFrontend(startFake(t, fake))
	fe.Log = logs.Logger(slog.LevelWarn)
	addr, _ := serve(t, fe)
	c := greeted(t, addr)
	c.cmd("XCLIENT ADDR=10.9.9.9", "501 5.5.2 ")
	c.cmd("EHLO client.example", "250 ")
	c.Send("NOOP", "XFORWARD ADDR=10.9.9.9", "XCLIENT ADDR=10.9.9.9 NAME=trusted.example")
	c.expect("250 ")
	c.expect("501 5.5.2 ")
	c.expect("501 5.5.2 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
	c.cmd("QUIT", "221 ")
	if got := fake.received(); strings.Contains(got, "XCLIENT") || strings.Contains(got, "XFORWARD") {
		t.Errorf("the back-end received an identity command:\n%s", got)
	}
	if n := len(logs.Lines("would change the back-end's view of the client")); n != 3 {
		t.Errorf("%d refusals logged, want 3:\n%s", n, logs.String())
	}
}

// Passthrough refuses XCLIENT and XFORWARD before the hand-over: sent
// alone they get 550, and in the pipelined group that triggers the splice
// (after HELP, NOOP, RSET, MAIL…) they end the session: nothing of that
// group reaches the back-end.
func TestPassthroughRefusesIdentityCommands(t *testing.T) {
	for _, group := range [][]string{
		{"XCLIENT ADDR=10.9.9.9"},
		{"XFORWARD ADDR=10.9.9.9"},
		{"NOOP", "XCLIENT ADDR=10.9.9.9"},
		{"RSET", "XCLIENT ADDR=10.9.9.9"},
		{"HELP", "XCLIENT ADDR=10.9.9.9"},
		{"HELP", "XFORWARD ADDR=10.9.9.9"},
		// Postfix skips white space before a verb: these are XCLIENT too.
		{"HELP", " XCLIENT ADDR=10.9.9.9"},
		{"HELP", "\tXFORWARD ADDR=10.9.9.9"},
		{"HELP", " \t XClient ADDR=10.9.9.9"},
		{"MAIL FROM:<a@example.org>", "xclient addr=10.9.9.9", "RCPT TO:<b@example.net>"},
	} {
		t.Run(strings.Join(group, "+"), func(t *testing.T) {
			var logs wiretest.Logs
			addr, exch, _ := passthroughFrontend(t, func(fe *Frontend) { fe.Log = logs.Logger(slog.LevelWarn) })
			c := greeted(t, addr)
			c.cmd("EHLO client.example", "250 ")
			c.Send(group...)
			for _, cmd := range group {
				verb, _, _ := strings.Cut(strings.ToUpper(cmd), " ")
				switch verb {
				case "NOOP", "RSET":
					c.expect("250 ")
					continue
				case "XCLIENT", "XFORWARD":
					c.expect("550 5.7.0 " + verb + " is not permitted")
					continue
				}
				// The command that would splice: the group is refused whole.
				c.expect("550 5.7.0 ")
				c.expect("421 4.7.0 gate.test ")
				c.expectClosed()
				break
			}
			if got := exch.received(); strings.Contains(strings.ToUpper(got), "XCLIENT") ||
				strings.Contains(got, "XFORWARD") || strings.Contains(got, "HELP") || strings.Contains(got, "MAIL") {
				t.Errorf("the back-end received:\n%s", got)
			}
			if len(logs.Lines("would change the back-end's view of the client")) == 0 {
				t.Errorf("no refusal logged:\n%s", logs.String())
			}
		})
	}
}

// A passthrough group without XCLIENT still splices whole.
func TestPassthroughGroupWithoutIdentitySplices(t *testing.T) {
	addr, exch, _ := passthroughFrontend(t, nil)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.Send("HELP", "NOOP")
	c.expect("502 ") // the fake's answer to HELP
	c.expect("250 ")
	if !exch.hasCommand("HELP") || !exch.hasCommand("NOOP") {
		t.Fatalf("back-end got %q", exch.commands())
	}
}

// A back-end that accepts and never greets costs a client the greeting
// timeout, not the setup timeout, and is handed to Suspect so the next
// client does not wait for it.
func TestBackendGreetingTimeout(t *testing.T) {
	silent := tarpit(t)
	backends, addrs := mtas(t, 1, nil)
	fe := newFrontend(silent, addrs[0])
	fe.Config.BackendSetupTimeout = time.Minute
	fe.Config.BackendGreetingTimeout = 200 * time.Millisecond
	var mu sync.Mutex
	var suspected []string
	fe.Suspect = func(b *proxy.Backend, why error) {
		mu.Lock()
		suspected = append(suspected, b.Name+": "+why.Error())
		mu.Unlock()
	}
	addr, _ := serve(t, fe)
	start := time.Now()
	c := greeted(t, addr)
	if d := time.Since(start); d >= fe.Config.BackendSetupTimeout {
		t.Errorf("greeted after %v: the silent back-end held the client for the setup timeout", d)
	}
	c.cmd("EHLO client.example", "250 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
	if len(backends[0].Messages()) != 1 {
		t.Fatal("the second back-end did not get the message")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(suspected) != 1 || !strings.HasPrefix(suspected[0], "b1: no SMTP greeting within") {
		t.Errorf("suspected %q, want b1 once", suspected)
	}
}

// A client that does not say HELO/EHLO within hello_timeout of the
// greeting is told 421 and let go, however many NOOPs it sends, and its
// back-end session is ended with it (QUIT).
func TestHelloTimeout(t *testing.T) {
	for _, mode := range []string{ModeRelay, ModePassthrough} {
		t.Run(mode, func(t *testing.T) {
			fake := &fakeMTA{}
			fe := newFrontend(startFake(t, fake))
			fe.Config.Mode = mode
			fe.Config.HelloTimeout = 500 * time.Millisecond
			addr, _ := serve(t, fe)
			c := greeted(t, addr)
			deadline := time.Now().Add(wait)
			for time.Now().Before(deadline) {
				c.Send("NOOP")
				if r := c.Reply(); strings.HasPrefix(r[0], "421 4.4.2 ") {
					break
				} else if !strings.HasPrefix(r[0], "250 ") {
					t.Fatalf("got %q", r)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if time.Now().After(deadline) {
				t.Fatal("the client was never let go")
			}
			c.expectClosed()
			if !wiretest.Eventually(wait, func() bool { return fake.hasCommand("QUIT") }) {
				t.Error("the back-end connection stayed open")
			}
		})
	}
}

// Inside STARTTLS, where go-smtp used to do TLS of its own, a client's
// XCLIENT is refused and logged all the same, and a pumped message still
// goes through with the back-end's own replies.
func TestRelayRefusesIdentityCommandsInsideTLS(t *testing.T) {
	fake := &fakeMTA{Extensions: []string{"XCLIENT ADDR NAME", "8BITMIME"},
		Replies: map[string]string{"MAIL": "250 2.1.0 Sender ok by fake"}}
	var logs wiretest.Logs
	fe := newFrontend(startFake(t, fake))
	fe.TLSMode, fe.EdgeTLS = proxy.TLSStartTLS, wiretest.ServerTLS()
	fe.Log = logs.Logger(slog.LevelWarn)
	addr, _ := serve(t, fe)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.startTLS()
	c.cmd("EHLO client.example", "250 ")
	c.cmd("XCLIENT ADDR=10.9.9.9", "501 5.5.2 ")
	c.cmd("MAIL FROM:<alice@example.org>", "250 2.1.0 Sender ok by fake")
	c.cmd("RCPT TO:<bob@example.net>", "250 ")
	c.data("Subject: x\r\n\r\n..dot", "250 2.0.0 Ok: queued as FAKE1")
	c.cmd("QUIT", "221 ")
	if strings.Contains(fake.received(), "XCLIENT") {
		t.Errorf("the back-end received XCLIENT:\n%s", fake.received())
	}
	if msgs := fake.messages(); len(msgs) != 1 || msgs[0] != "Subject: x\r\n\r\n..dot\r\n" {
		t.Errorf("back-end got %q", msgs)
	}
	if n := len(logs.Lines("would change the back-end's view of the client")); n != 1 {
		t.Errorf("%d refusals logged, want 1:\n%s", n, logs.String())
	}
}
