package smtp

import (
	"context"
	"encoding/base64"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// The fixed NTLM exchange of the fake Exchange: minimal NEGOTIATE,
// CHALLENGE and AUTHENTICATE messages with the [MS-NLMP] signature, type
// and flags, base64 as [MS-SMTPNTLM] carries them. The fake checks them
// verbatim, so any byte gatehouse changed would fail the login.
var (
	ntlmNegotiate    = ntlmMessage(1, make([]byte, 16))
	ntlmChallenge    = ntlmMessage(2, append(make([]byte, 8), 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef))
	ntlmAuthenticate = ntlmMessage(3, make([]byte, 48))
)

func ntlmMessage(typ byte, body []byte) string {
	msg := append([]byte("NTLMSSP\x00"), typ, 0, 0, 0, 0x07, 0x82, 0x08, 0xa2)
	return base64.StdEncoding.EncodeToString(append(msg, body...))
}

// fakeExchange advertises what an Exchange receive connector does and
// speaks AUTH NTLM as [MS-SMTPNTLM] section 2.2.1.2 has it: "334 NTLM
// supported" (not base64!) when no initial response came.
func fakeExchange() *fakeMTA {
	return &fakeMTA{
		Greeting: "220 exch1.example Microsoft ESMTP MAIL Service ready",
		Extensions: []string{"SIZE 37748736", "PIPELINING", "DSN", "ENHANCEDSTATUSCODES", "STARTTLS",
			"X-ANONYMOUSTLS", "AUTH NTLM", "X-EXPS GSSAPI NTLM", "8BITMIME", "BINARYMIME", "CHUNKING", "XRDST"},
		Handle: func(s *fakeSession, verb, arg string) bool {
			if verb != "AUTH" {
				return false
			}
			switch arg {
			case "NTLM":
				s.say("334 NTLM supported")
				if l, _ := s.line(); l != ntlmNegotiate {
					s.say("535 5.7.3 Authentication unsuccessful")
					return true
				}
			case "NTLM " + ntlmNegotiate:
			default:
				s.say("504 5.7.4 Unrecognized authentication type")
				return true
			}
			s.say("334 " + ntlmChallenge)
			if l, _ := s.line(); l != ntlmAuthenticate {
				s.say("535 5.7.3 Authentication unsuccessful")
				return true
			}
			s.say("235 2.7.0 Authentication successful")
			return true
		},
	}
}

// passthroughFrontend serves a fake Exchange in passthrough mode.
func passthroughFrontend(t *testing.T, set func(*Frontend)) (string, *fakeMTA, *Frontend) {
	t.Helper()
	exch := fakeExchange()
	fe := newFrontend(startFake(t, exch))
	fe.Config.Mode = ModePassthrough
	if set != nil {
		set(fe)
	}
	addr, _ := serve(t, fe)
	return addr, exch, fe
}

// An AUTH mechanism gatehouse does not know completes through it byte for
// byte, and the session goes on over the same back-end connection.
func TestPassthroughNTLM(t *testing.T) {
	addr, exch, _ := passthroughFrontend(t, nil)
	c := greeted(t, addr)
	ehlo := c.cmd("EHLO client.example", "250 ")
	if !strings.HasPrefix(ehlo, "250-gate.test Hello client.example\n") {
		t.Errorf("EHLO reply should start with gatehouse's own line:\n%s", ehlo)
	}
	for _, want := range []string{"AUTH NTLM", "X-EXPS GSSAPI NTLM", "X-ANONYMOUSTLS", "SIZE 37748736", "BINARYMIME", "XRDST"} {
		if !strings.Contains(ehlo, want) {
			t.Errorf("EHLO reply lacks the back-end's %s:\n%s", want, ehlo)
		}
	}
	if strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("the back-end's STARTTLS was offered although gatehouse offers none:\n%s", ehlo)
	}

	sent := []string{"AUTH NTLM", ntlmNegotiate, ntlmAuthenticate, "MAIL FROM:<alice@example.org>",
		"RCPT TO:<bob@example.net>", "DATA", "Subject: ntlm\r\n\r\nHello.\r\n.", "QUIT"}
	c.cmd(sent[0], "334 NTLM supported")
	c.cmd(sent[1], "334 "+ntlmChallenge)
	c.cmd(sent[2], "235 2.7.0 Authentication successful")
	c.cmd(sent[3], "250 ")
	c.cmd(sent[4], "250 ")
	c.cmd(sent[5], "354 ")
	c.cmd(sent[6], "250 2.0.0 Ok: queued as FAKE1")
	c.cmd(sent[7], "221 ")
	c.expectClosed()

	recv := exch.received()
	i := strings.Index(recv, "AUTH NTLM")
	if want := strings.Join(sent, "\r\n") + "\r\n"; i < 0 || recv[i:] != want {
		t.Fatalf("back-end received from AUTH on\n%q\nwant exactly\n%q", recv[max(i, 0):], want)
	}
}

// STARTTLS happens at the edge with gatehouse's certificate; NTLM then
// runs inside it, and where TLS is required nothing passes before it.
func TestPassthroughStartTLS(t *testing.T) {
	addr, exch, _ := passthroughFrontend(t, func(fe *Frontend) {
		fe.TLSMode, fe.EdgeTLS, fe.TLSRequired = proxy.TLSStartTLS, wiretest.ServerTLS(), true
	})
	c := greeted(t, addr)
	ehlo := c.cmd("EHLO client.example", "250 ")
	if !strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
		t.Errorf("before TLS the EHLO reply should offer STARTTLS and no AUTH:\n%s", ehlo)
	}
	c.cmd("AUTH NTLM", "530 5.7.0 Must issue a STARTTLS command first")
	c.cmd("MAIL FROM:<alice@example.org>", "530 5.7.0 ")
	c.startTLS()
	c.cmd("AUTH NTLM", "503 5.5.1 ") // RFC 3207 4.2: EHLO again first
	ehlo = c.cmd("EHLO client.example", "250 ")
	if strings.Contains(ehlo, "STARTTLS") || !strings.Contains(ehlo, "AUTH NTLM") {
		t.Errorf("inside TLS the EHLO reply should offer AUTH and no STARTTLS:\n%s", ehlo)
	}
	c.cmd("AUTH NTLM "+ntlmNegotiate, "334 "+ntlmChallenge)
	c.cmd(ntlmAuthenticate, "235 ")
	c.cmd("QUIT", "221 ")
	if strings.Count(exch.received(), "AUTH NTLM") != 1 {
		t.Errorf("the back-end saw AUTH before TLS:\n%q", exch.received())
	}
}

// Commands pipelined behind STARTTLS are discarded, never relayed.
func TestPassthroughStartTLSInjection(t *testing.T) {
	addr, exch, _ := passthroughFrontend(t, func(fe *Frontend) { fe.TLSMode, fe.EdgeTLS = proxy.TLSStartTLS, wiretest.ServerTLS() })
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.Send("STARTTLS", "MAIL FROM:<evil@example.org>")
	c.expect("220 2.0.0 ")
	c.StartTLS(wiretest.ClientTLS())
	c.silent(200 * time.Millisecond)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("QUIT", "221 ")
	if exch.hasCommand("MAIL") {
		t.Fatalf("the injected MAIL reached the back-end: %q", exch.commands())
	}
}

// What the client pipelines after the hand-over command reaches the
// back-end too.
func TestPassthroughPipelining(t *testing.T) {
	addr, exch, _ := passthroughFrontend(t, nil)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.Send("MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>", "QUIT")
	c.expect("250 ")
	c.expect("250 ")
	c.expect("221 ")
	c.expectClosed()
	cmds := exch.commands()
	if n := len(cmds); n < 3 || cmds[n-3] != "MAIL FROM:<alice@example.org>" || cmds[n-1] != "QUIT" {
		t.Fatalf("back-end got %q", cmds)
	}
}

// Before the hand-over gatehouse answers itself: EHLO first, NOOP, RSET,
// bad syntax, and too many errors close the session.
func TestPassthroughPreAuthCommands(t *testing.T) {
	addr, exch, _ := passthroughFrontend(t, nil)
	c := greeted(t, addr)
	c.cmd("MAIL FROM:<alice@example.org>", "503 5.5.1 Send EHLO first")
	c.cmd("NOOP", "250 ")
	c.cmd("RSET", "250 ")
	c.cmd("EHLO", "501 5.5.4 ")
	c.cmd("STARTTLS", "502 5.5.1 ")
	c.Send("\x00\x01junk")
	c.expect("500 5.5.2 ")
	c.expect("421 4.7.0 gate.test Too many errors")
	c.expectClosed()
	if exch.hasCommand("MAIL") {
		t.Errorf("MAIL before EHLO reached the back-end")
	}
}

// At shutdown a client still in the pre-auth phase hears 421.
func TestPassthroughShutdown(t *testing.T) {
	exch := fakeExchange()
	fe := newFrontend(startFake(t, exch))
	fe.Config.Mode = ModePassthrough
	addr, srv := serve(t, fe)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	c.expect("421 4.3.2 gate.test Service shutting down")
	c.expectClosed()
}

// Once spliced, the session is the back-end's: a shutdown does not cut
// into it, and bytes flow until the client leaves.
func TestPassthroughSplicedSurvivesShutdown(t *testing.T) {
	exch := fakeExchange()
	fe := newFrontend(startFake(t, exch))
	fe.Config.Mode = ModePassthrough
	addr, srv := serveWith(t, &proxy.Server{Name: "smtp-test", Handler: fe, Log: quiet})
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("MAIL FROM:<alice@example.org>", "250 ")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	c.silent(100 * time.Millisecond)
	c.cmd("RCPT TO:<bob@example.net>", "250 ")
	c.cmd("QUIT", "221 ")
	if _, err := io.ReadAll(c.R); err != nil { // the back-end closed
		t.Fatal(err)
	}
	c.Close() // and so does the client: the session is over
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
