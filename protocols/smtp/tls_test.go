package smtp

import (
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// tlsFrontend is a relay listener offering STARTTLS with the test
// certificate and AUTH relayed to back-ends that know alice.
func tlsFrontend(t *testing.T, required bool) (string, []*smtptest.Server) {
	t.Helper()
	backends, addrs := mtas(t, 1, func(s *smtptest.Server) { s.AuthUsers = map[string]string{"alice": "secret"} })
	fe := newFrontend(addrs...)
	fe.TLSMode, fe.EdgeTLS, fe.TLSRequired = proxy.TLSStartTLS, wiretest.ServerTLS(), required
	fe.Config.Auth = AuthRelay
	addr, _ := serve(t, fe)
	return addr, backends
}

// STARTTLS at the edge: offered after EHLO, gatehouse's certificate, EHLO
// again inside, and the message goes through marked as TLS-borne at the
// edge while the back-end leg stays as configured.
func TestStartTLSAtTheEdge(t *testing.T) {
	addr, backends := tlsFrontend(t, true)
	c := greeted(t, addr)
	if ehlo := c.cmd("EHLO client.example", "250 "); !strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
		t.Fatalf("plaintext EHLO reply should offer STARTTLS and no AUTH:\n%s", ehlo)
	}
	c.startTLS()
	c.cmd("MAIL FROM:<alice@example.org>", "502 5.5.1 ") // RFC 3207 4.2: EHLO again first
	ehlo := c.cmd("EHLO client.example", "250 ")
	if strings.Contains(ehlo, "STARTTLS") || !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("EHLO reply inside TLS:\n%s", ehlo)
	}
	c.cmd("STARTTLS", "502 5.5.1 ") // only once
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
	if n := len(backends[0].Messages()); n != 1 {
		t.Fatalf("back-end got %d messages", n)
	}
}

// Commands pipelined behind STARTTLS in plaintext are never executed
// (CVE-2011-0411): the client gets the 220 alone, then silence inside TLS
// until it speaks, and must still say EHLO.
func TestStartTLSInjectionDiscarded(t *testing.T) {
	addr, backends := tlsFrontend(t, false)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.Send("STARTTLS", "MAIL FROM:<evil@example.org>", "RSET")
	c.expect("220 2.0.0 ")
	c.StartTLS(wiretest.ClientTLS())
	c.silent(200 * time.Millisecond)
	c.cmd("RCPT TO:<bob@example.net>", "502 5.5.1 ") // no MAIL was taken
	c.cmd("EHLO client.example", "250 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
	msgs := backends[0].Messages()
	if len(msgs) != 1 || msgs[0].From != "alice@example.org" {
		t.Fatalf("back-end got %+v", msgs)
	}
}

// AUTH before STARTTLS on a listener that requires TLS: 530 5.7.0, and
// the back-end never sees the credentials.
func TestAuthBeforeTLSRefused(t *testing.T) {
	addr, _ := tlsFrontend(t, true)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "530 5.7.0 Must issue a STARTTLS command first")
	c.cmd("AUTH LOGIN", "530 5.7.0 ")
}

// Without the TLS requirement plaintext AUTH is offered and works.
func TestAuthPlaintextAllowed(t *testing.T) {
	addr, backends := tlsFrontend(t, false)
	c := greeted(t, addr)
	if ehlo := c.cmd("EHLO client.example", "250 "); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("EHLO reply lacks AUTH:\n%s", ehlo)
	}
	c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "235 2.0.0 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
	if msgs := backends[0].Messages(); len(msgs) != 1 || msgs[0].User != "alice" {
		t.Fatalf("back-end got %+v", msgs)
	}
}

// Implicit TLS (port 465): the handshake comes first, then the greeting.
func TestImplicitTLS(t *testing.T) {
	backends, addrs := mtas(t, 1, nil)
	fe := newFrontend(addrs...)
	fe.TLSMode, fe.EdgeTLS = proxy.TLSImplicit, wiretest.ServerTLS()
	addr, _ := serve(t, fe)
	c := dial(t, addr)
	c.StartTLS(wiretest.ClientTLS())
	c.expect("220 gate.test ESMTP")
	if ehlo := c.cmd("EHLO client.example", "250 "); strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("STARTTLS offered inside implicit TLS:\n%s", ehlo)
	}
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
	if msgs := backends[0].Messages(); len(msgs) != 1 {
		t.Fatalf("back-end got %d messages", len(msgs))
	}
}

// STARTTLS toward the back-end: gatehouse upgrades before greeting the
// client, and a back-end that does not offer it is skipped rather than
// used in the clear.
func TestBackendStartTLS(t *testing.T) {
	plain, _ := mtas(t, 1, nil)
	secure, _ := mtas(t, 1, func(s *smtptest.Server) { s.TLSConfig = wiretest.ServerTLS() })
	fe := newFrontend(plain[0].Addr, secure[0].Addr)
	fe.BackendTLSMode, fe.BackendTLS = proxy.TLSStartTLS, wiretest.ClientTLS()
	addr, _ := serve(t, fe)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
	if n := len(plain[0].Messages()); n != 0 {
		t.Errorf("the back-end without STARTTLS got %d messages", n)
	}
	msgs := secure[0].Messages()
	if len(msgs) != 1 || !msgs[0].TLS {
		t.Fatalf("the STARTTLS back-end got %+v, want one message over TLS", msgs)
	}
}
