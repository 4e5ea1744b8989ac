package smtp

import (
	"log/slog"
	"net"
	"net/smtp"
	"strconv"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// A message goes through, and the client's 250 is the back-end's own.
func TestRelayDelivers(t *testing.T) {
	backends, addrs := mtas(t, 1, nil)
	addr, _ := serve(t, newFrontend(addrs...))

	c := greeted(t, addr)
	ehlo := c.cmd("EHLO client.example", "250 ")
	for _, ext := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "SIZE"} {
		if !strings.Contains(ehlo, ext) {
			t.Errorf("EHLO reply lacks %s:\n%s", ext, ehlo)
		}
	}
	// smtptest answers "250 2.0.0 OK: queued"; that text, not go-smtp's
	// default, proves the reply came from the back-end.
	c.mail("alice@example.org", "bob@example.net", "Subject: hi\r\n\r\nHello.", "250 2.0.0 OK: queued")
	c.cmd("QUIT", "221 ")

	msgs := backends[0].Messages()
	if len(msgs) != 1 {
		t.Fatalf("back-end got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "alice@example.org" || len(m.To) != 1 || m.To[0] != "bob@example.net" || m.Helo != "client.example" {
		t.Errorf("back-end got from %q to %q helo %q", m.From, m.To, m.Helo)
	}
	if string(m.Data) != "Subject: hi\r\n\r\nHello.\r\n" {
		t.Errorf("back-end got data %q", m.Data)
	}
}

// The client gets 250 for its data only after the back-end said 250; a
// back-end that fails in between gives a 4xx, and its own refusals come
// through exactly.
func TestRelayEndToEndAcknowledgement(t *testing.T) {
	for _, tc := range []struct {
		name   string
		set    func(*smtptest.Server)
		want   string
		closed bool
	}{
		{"dropped after data", func(s *smtptest.Server) { s.DropAfterData = true }, "421 4.4.2 ", true},
		{"mailbox full", func(s *smtptest.Server) {
			s.DataReply = &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 3, 1}, Message: "Mailbox full"}
		}, "452 4.3.1 Mailbox full", false},
		{"policy refusal", func(s *smtptest.Server) {
			s.DataReply = &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Spam refused"}
		}, "550 5.7.1 Spam refused", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backends, addrs := mtas(t, 1, tc.set)
			addr, _ := serve(t, newFrontend(addrs...))
			c := greeted(t, addr)
			c.cmd("EHLO client.example", "250 ")
			c.mail("alice@example.org", "bob@example.net", "Subject: x\r\n\r\nbody", tc.want)
			if tc.closed {
				c.expectClosed()
			} else {
				c.cmd("NOOP", "250 ") // the session goes on
			}
			if n := len(backends[0].Messages()); n != 0 {
				t.Errorf("back-end recorded %d messages", n)
			}
		})
	}
}

// Replies to MAIL and RCPT are the back-end's, code, enhanced code and
// text, multi-line ones included.
func TestRelayRepliesPassedThrough(t *testing.T) {
	multi := &fakeMTA{Replies: map[string]string{"RCPT": "250-2.1.5 Recipient ok\r\n250 2.1.5 queued for <bob@example.net>"}}
	addr, _ := serve(t, newFrontend(startFake(t, multi)))
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("MAIL FROM:<alice@example.org>", "250 2.0.0 OK")
	if got := c.cmd("RCPT TO:<bob@example.net>", "250 "); got != "250-2.1.5 Recipient ok\n250 2.1.5 queued for <bob@example.net>" {
		t.Errorf("RCPT reply %q, want the back-end's", got)
	}
	c.cmd("QUIT", "221 ")

	fake := &fakeMTA{Replies: map[string]string{
		"RCPT": "550-5.1.1 <nobody@example.net>: Recipient address rejected:\r\n550 5.1.1 User unknown in virtual mailbox table",
		"MAIL": "250 2.1.0 Sender ok",
	}}
	addr, _ = serve(t, newFrontend(startFake(t, fake)))
	c = greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	// The back-end's 250 to MAIL, not go-smtp's "Roger, accepting mail".
	if got := c.cmd("MAIL FROM:<alice@example.org>", "250 "); got != "250 2.1.0 Sender ok" {
		t.Errorf("MAIL reply %q, want the back-end's", got)
	}
	got := c.cmd("RCPT TO:<nobody@example.net>", "550 5.1.1 User unknown in virtual mailbox table")
	if want := "550-<nobody@example.net>: Recipient address rejected:\n550 5.1.1 User unknown in virtual mailbox table"; got != want {
		t.Errorf("RCPT reply\n%q, want\n%q", got, want)
	}
	// No recipient: the back-end's 554 for DATA arrives after the client
	// sent its data (go-smtp says 354 first, RFC 5321 allows that), but
	// here go-smtp itself refuses DATA without a recipient.
	c.cmd("DATA", "502 5.5.1 ")
}

// A dead first back-end, then a hung one, then one that greets 554: the
// session is served by the fourth and the client notices nothing.
func TestRelayFailoverBeforeGreeting(t *testing.T) {
	refusing := startFake(t, &fakeMTA{Greeting: "554 5.3.2 busy.test No service for you"})
	backends, addrs := mtas(t, 1, nil)
	fe := newFrontend(wiretest.FreeAddr(t), tarpit(t), refusing, addrs[0])
	fe.Config.BackendSetupTimeout = 300 * time.Millisecond
	addr, _ := serve(t, fe)

	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
	if n := len(backends[0].Messages()); n != 1 {
		t.Fatalf("the fourth back-end got %d messages, want 1", n)
	}
}

// With no back-end able to take the session the client hears 421 4.3.2
// instead of a greeting, and the connection closes.
func TestRelayNoBackend(t *testing.T) {
	fe := newFrontend(wiretest.FreeAddr(t), startFake(t, &fakeMTA{Greeting: "421 4.3.2 closing"}))
	addr, _ := serve(t, fe)
	c := dial(t, addr)
	c.expect("421 4.3.2 gate.test No mail server available")
	c.expectClosed()
}

// BDAT from the client reaches a back-end without CHUNKING as DATA,
// dot-stuffed: go-smtp always advertises CHUNKING, so gatehouse must
// translate.
func TestRelayBDATAsDATA(t *testing.T) {
	fake := &fakeMTA{Extensions: []string{"SIZE 1000000"}}
	addr, _ := serve(t, newFrontend(startFake(t, fake)))
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("MAIL FROM:<alice@example.org>", "250 ")
	c.cmd("RCPT TO:<bob@example.net>", "250 ")
	chunk1 := "Subject: chunks\r\n\r\n.leading dot\r\n"
	chunk2 := "end\r\n"
	c.Send("BDAT " + strconv.Itoa(len(chunk1)) + "\r\n" + chunk1[:len(chunk1)-2])
	c.expect("250 ")
	c.Send("BDAT " + strconv.Itoa(len(chunk2)) + " LAST\r\n" + chunk2[:len(chunk2)-2])
	c.expect("250 2.0.0 Ok: queued as FAKE1")

	if !fake.hasCommand("DATA") || fake.hasCommand("BDAT") {
		t.Errorf("back-end got %q, want DATA and no BDAT", fake.commands())
	}
	want := "Subject: chunks\r\n\r\n..leading dot\r\nend\r\n"
	if msgs := fake.messages(); len(msgs) != 1 || msgs[0] != want {
		t.Errorf("back-end got %q, want %q", msgs, want)
	}
}

// Only CRLF.CRLF ends the data: the end-of-data lookalikes of SMTP
// smuggling stay inside the one message, made harmless on the way out.
func TestRelayNoSmuggling(t *testing.T) {
	fake := &fakeMTA{}
	addr, _ := serve(t, newFrontend(startFake(t, fake)))
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("MAIL FROM:<alice@example.org>", "250 ")
	c.cmd("RCPT TO:<bob@example.net>", "250 ")
	c.cmd("DATA", "354 ")
	c.Send("Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<x@example.net>\n.\r\nlast")
	c.Send(".")
	c.expect("250 2.0.0 Ok: queued")
	msgs := fake.messages()
	if len(msgs) != 1 {
		t.Fatalf("back-end got %d messages, want 1: %q", len(msgs), msgs)
	}
	if fake.hasCommand("MAIL FROM:<evil") || fake.hasCommand("RCPT TO:<x@") {
		t.Errorf("smuggled commands reached the back-end: %q", fake.commands())
	}
	// The bare LFs went out as CRLF, and the dot after them stuffed.
	if !strings.Contains(msgs[0], "first\r\n..\r\nMAIL FROM:<evil@example.org>\r\n") {
		t.Errorf("back-end got %q", msgs[0])
	}
}

// A line of a dot and a bare LF or CR after a CRLF (whose dot go-smtp's
// data reader would drop, and which some back-ends take for the end of
// data) gets the message refused with 550 5.6.0: the back-end never
// gets its end, and the session ends.
func TestRelayDotBareCRLFRefused(t *testing.T) {
	for name, body := range map[string]string{
		"CRLF.LF":     "Subject: one\r\n\r\nfirst\r\n.\nMAIL FROM:<evil@example.org>",
		"CRLF.CRCRLF": "Subject: one\r\n\r\nfirst\r\n.\r\r\nMAIL FROM:<evil@example.org>",
		"CRLF.CRx":    "Subject: one\r\n\r\nfirst\r\n.\rx",
		"first line":  ".\nSubject: one",
	} {
		t.Run(name, func(t *testing.T) {
			fake := &fakeMTA{}
			addr, _ := serve(t, newFrontend(startFake(t, fake)))
			c := greeted(t, addr)
			c.cmd("EHLO client.example", "250 ")
			c.cmd("MAIL FROM:<alice@example.org>", "250 ")
			c.cmd("RCPT TO:<bob@example.net>", "250 ")
			c.data(body, "550 5.6.0 ")
			c.Send("NOOP")
			c.expect("421 4.3.0 ")
			c.expectClosed()
			if msgs := fake.messages(); len(msgs) != 0 {
				t.Errorf("the back-end got %q", msgs)
			}
		})
	}
}

// VRFY is never relayed: gatehouse answers 252 (RFC 5321 section 3.5.3).
func TestRelayVRFYNotRelayed(t *testing.T) {
	fake := &fakeMTA{}
	addr, _ := serve(t, newFrontend(startFake(t, fake)))
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("VRFY postmaster", "252 2.5.0 ")
	if fake.hasCommand("VRFY") {
		t.Errorf("VRFY reached the back-end")
	}
}

// A back-end that vanishes between transactions gives the next command
// 421 4.4.2, and the session ends.
func TestRelayBackendLost(t *testing.T) {
	backends, addrs := mtas(t, 1, nil)
	addr, _ := serve(t, newFrontend(addrs...))
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	backends[0].Close()
	c.cmd("MAIL FROM:<alice@example.org>", "421 4.4.2 ")
	c.expectClosed()
}

// One log line per transaction, with the facts a queue needs.
func TestRelayLogsTransaction(t *testing.T) {
	_, addrs := mtas(t, 1, nil)
	fe := newFrontend(addrs...)
	var logs wiretest.Logs
	fe.Log = logs.Logger(slog.LevelInfo)
	addr, _ := serve(t, fe)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
	c.cmd("MAIL FROM:<carol@example.org>", "250 ")
	c.cmd("RSET", "250 ")
	c.cmd("QUIT", "221 ")
	c.expectClosed()

	if !wiretest.Eventually(wait, func() bool { return len(logs.Lines("msg=\"smtp session\"")) == 1 }) {
		t.Fatalf("no session line in:\n%s", logs.String())
	}
	lines := logs.Lines("msg=\"smtp transaction\"")
	if len(lines) != 2 {
		t.Fatalf("got %d transaction lines, want 2:\n%s", len(lines), logs.String())
	}
	for _, want := range []string{"from=alice@example.org", "rcpts=1", "size=8", "backend=b1", `reply="250 2.0.0 OK: queued"`, "outcome=accepted"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("first transaction line lacks %s: %s", want, lines[0])
		}
	}
	if !strings.Contains(lines[1], "from=carol@example.org") || !strings.Contains(lines[1], "outcome=aborted") {
		t.Errorf("second transaction line: %s", lines[1])
	}
}

// Go's own net/smtp client sends through gatehouse with STARTTLS and
// AUTH PLAIN.
func TestRelayNetSMTPClient(t *testing.T) {
	backends, addrs := mtas(t, 1, func(s *smtptest.Server) { s.AuthUsers = map[string]string{"alice": "secret"} })
	fe := newFrontend(addrs...)
	fe.TLSMode, fe.EdgeTLS, fe.TLSRequired = proxy.TLSStartTLS, wiretest.ServerTLS(), true
	fe.Config.Auth = AuthRelay
	addr, _ := serve(t, fe)

	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(wait))
	c, err := smtp.NewClient(conn, "gate.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.StartTLS(wiretest.ClientTLS()); err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	if err := c.Auth(smtp.PlainAuth("", "alice", "secret", "gate.test")); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := c.Mail("alice@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@example.net"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: net/smtp\r\n\r\nHi.\r\n"))
	if err := w.Close(); err != nil {
		t.Fatalf("end of data: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if msgs := backends[0].Messages(); len(msgs) != 1 || msgs[0].User != "alice" {
		t.Errorf("back-end got %+v, want one message from user alice", msgs)
	}
}
