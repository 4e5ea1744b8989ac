package pop3

import (
	"context"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/pop3/pop3test"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/pires/go-proxyproto"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestLoginUserPassThenSplice(t *testing.T) {
	be := startBackend(t, "mail1")
	addr := start(t, &Frontend{Pool: poolOf(be)})
	c := greeted(t, addr)
	c.Send("CAPA")
	c.Expect("+OK")
	caps := multiline(c)
	// No TLS is configured, so no STLS; USER and SASL are offered.
	if contains(caps, "STLS") || !contains(caps, "USER") || !contains(caps, "SASL PLAIN LOGIN") || !contains(caps, "UIDL") {
		t.Fatalf("CAPA = %q", caps)
	}
	c.Send("USER alice")
	c.Expect("+OK")
	c.Send("PASS demo")
	// The back-end's own +OK reaches the client: the session is spliced.
	c.Expect("+OK mail1: alice has 1 messages")
	c.Send("RETR 1")
	c.Expect("+OK")
	if body := multiline(c); !contains(body, "Subject: for alice on mail1") {
		t.Fatalf("RETR 1 = %q", body)
	}
	c.Send("QUIT")
	c.Expect("+OK mail1 POP3 server signing off")
	c.ExpectClosed()
	if got := be.Logins(); len(got) != 1 || got[0] != "alice" {
		t.Fatalf("back-end logins = %q", got)
	}
}

func TestAuthMechanisms(t *testing.T) {
	for name, steps := range map[string][][2]string{
		// AUTH PLAIN with an initial response (RFC 5034 section 4).
		"plain-ir": {{"AUTH PLAIN " + b64("\x00alice\x00demo"), "+OK mail1: alice"}},
		// Without one: an empty challenge, then the response.
		"plain": {{"AUTH PLAIN", "+ "}, {b64("\x00alice\x00demo"), "+OK mail1: alice"}},
		// LOGIN asks for the user name, then the password.
		"login": {{"AUTH LOGIN", "+ " + b64("Username:")}, {b64("bob"), "+ " + b64("Password:")}, {b64("demo"), "+OK mail1: bob"}},
		// LOGIN with the user name as initial response.
		"login-ir": {{"AUTH LOGIN " + b64("bob"), "+ " + b64("Password:")}, {b64("demo"), "+OK mail1: bob"}},
		// "*" cancels; the session goes on.
		"cancel": {{"AUTH PLAIN", "+ "}, {"*", "-ERR Authentication cancelled"}, {"AUTH", "+OK"}},
	} {
		t.Run(name, func(t *testing.T) {
			// A back-end each: a POP3 maildrop is locked while a session
			// holds it (RFC 1939 section 8).
			addr := start(t, &Frontend{Pool: poolOf(startBackend(t, "mail1"))})
			c := greeted(t, addr)
			for _, s := range steps {
				c.Send(s[0])
				c.Expect(s[1])
			}
		})
	}
}

func TestWrongPasswordAndUnknownUserGetTheSameReply(t *testing.T) {
	be := startBackend(t, "mail1")
	addr := start(t, &Frontend{Pool: poolOf(be)})
	reply := func(user, pass string) string {
		c := greeted(t, addr)
		c.Send("USER "+user, "PASS "+pass)
		c.Expect("+OK")
		return c.Expect("-ERR [AUTH]")
	}
	wrong, unknown := reply("alice", "guess"), reply("mallory", "demo")
	if wrong != unknown {
		t.Fatalf("wrong password got %q, unknown user %q: a guesser can tell them apart", wrong, unknown)
	}
}

func TestOnlyAuthorizationCommandsBeforeLogin(t *testing.T) {
	addr := start(t, &Frontend{Pool: poolOf()})
	c := greeted(t, addr)
	for _, cmd := range []string{"STAT", "LIST", "RETR 1", "NOOP", "APOP alice 0123456789abcdef", "PASS demo", "STLS", "AUTH CRAM-MD5"} {
		c.Send(cmd)
		c.Expect("-ERR")
	}
	c.Send("QUIT")
	c.Expect("+OK")
	c.ExpectClosed()
}

func TestPipelinedLoginAndCommands(t *testing.T) {
	be := startBackend(t, "mail1")
	addr := start(t, &Frontend{Pool: poolOf(be)})
	c := greeted(t, addr)
	// One write: gatehouse reads STAT ahead of the splice and must hand it
	// to the back-end after the login.
	c.Send("USER alice", "PASS demo", "STAT", "QUIT")
	c.Expect("+OK")
	c.Expect("+OK mail1: alice")
	c.Expect("+OK 1 ")
	c.Expect("+OK mail1 POP3 server signing off")
}

func TestSTLSAtTheEdgeDiscardsInjectedCommands(t *testing.T) {
	be := startBackend(t, "mail1")
	addr := start(t, &Frontend{Pool: poolOf(be), Link: proxy.Link{EdgeTLS: wiretest.ServerTLS(), TLSMode: proxy.TLSStartTLS, TLSRequired: true}})
	c := greeted(t, addr)
	c.Send("CAPA")
	c.Expect("+OK")
	// TLS is required, so before it only STLS is offered for logging in.
	if caps := multiline(c); !contains(caps, "STLS") || contains(caps, "USER") || contains(caps, "SASL PLAIN LOGIN") {
		t.Fatalf("CAPA before TLS = %q", caps)
	}
	c.Send("USER alice")
	c.Expect("-ERR [AUTH] Plaintext authentication disallowed")
	// The injection probe: CAPA pipelined behind STLS in one write must
	// never be answered, neither in clear nor inside TLS.
	c.Send("STLS", "CAPA")
	c.Expect("+OK Begin TLS")
	c.StartTLS(wiretest.ClientTLS())
	c.ExpectSilence(200 * time.Millisecond)
	c.Send("CAPA")
	c.Expect("+OK")
	if caps := multiline(c); contains(caps, "STLS") || !contains(caps, "USER") {
		t.Fatalf("CAPA inside TLS = %q", caps)
	}
	c.Send("STLS")
	c.Expect("-ERR")
	c.Send("USER alice", "PASS demo", "STAT")
	c.Expect("+OK")
	c.Expect("+OK mail1: alice")
	c.Expect("+OK 1 ")
}

func TestImplicitTLS(t *testing.T) {
	be := startBackend(t, "mail1")
	addr := start(t, &Frontend{Pool: poolOf(be), Link: proxy.Link{EdgeTLS: wiretest.ServerTLS(), TLSMode: proxy.TLSImplicit, TLSRequired: true}})
	c := wiretest.Dial(t, addr)
	c.StartTLS(wiretest.ClientTLS())
	c.Expect("+OK POP3 ready")
	c.Send("AUTH PLAIN " + b64("\x00bob\x00demo"))
	c.Expect("+OK mail1: bob")
	c.Send("RETR 1")
	c.Expect("+OK")
	if body := multiline(c); !contains(body, "Subject: for bob on mail1") {
		t.Fatalf("RETR 1 = %q", body)
	}
}

func TestBackendSTLSAndPlainLogin(t *testing.T) {
	be := startBackend(t, "mail1", func(s *pop3test.Server) { s.TLSConfig, s.AuthTLSOnly = wiretest.ServerTLS(), true })
	addr := start(t, &Frontend{Pool: poolOf(be),
		Config: Config{BackendLogin: LoginPlain}, Link: proxy.Link{BackendTLS: wiretest.ClientTLS(), BackendTLSMode: proxy.TLSStartTLS},
	})
	loggedIn(t, addr, "alice")
	rec := be.LoginRecords()
	if len(rec) != 1 || !rec[0].TLS || rec[0].Mechanism != "PLAIN" {
		t.Fatalf("back-end logins = %+v, want one AUTH PLAIN inside TLS", rec)
	}
}

func TestProxyHeaderCarriesTheClientAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := pop3test.NewUnstartedServer("mail1")
	be.Mailboxes = mailboxes("mail1")
	be.StartOn(&proxyproto.Listener{Listener: ln})
	t.Cleanup(be.Close)
	addr := start(t, &Frontend{Pool: poolOf(be), Link: proxy.Link{ProxyVersion: 2}})
	c := wiretest.DialFrom(t, "127.0.0.3", addr)
	c.Expect("+OK")
	c.Send("USER alice", "PASS demo")
	c.Expect("+OK")
	c.Expect("+OK mail1: alice")
	if rec := be.LoginRecords(); len(rec) != 1 || !strings.HasPrefix(rec[0].RemoteAddr, "127.0.0.3:") {
		t.Fatalf("back-end saw %+v, want the client's 127.0.0.3", rec)
	}
}

func TestHashRoutingSpreadsUsersAndFailsOver(t *testing.T) {
	b1, b2 := startBackend(t, "mail1"), startBackend(t, "mail2")
	pool := poolOf(b1, b2)
	addr := start(t, &Frontend{Pool: pool})
	want, _ := (&proxy.HashRouter{Pool: pool}).Route(context.Background(), proxy.RouteQuery{User: "alice"})
	first, second := want.Order[0].Name, want.Order[1].Name
	c := loggedIn(t, addr, "alice")
	c.Send("RETR 1")
	c.Expect("+OK")
	if body := multiline(c); !contains(body, "Subject: for alice on "+first) {
		t.Fatalf("alice reached %q, want her hash owner %s", body, first)
	}
	// Her owner stops answering: the next in her order takes the login.
	want.Order[0].SetHealthy(false)
	c = greeted(t, addr)
	c.Send("USER alice", "PASS demo")
	c.Expect("+OK")
	c.Expect("+OK " + second + ": alice")
}

func TestMappedBackendDownIsTemporary(t *testing.T) {
	b1, b2 := startBackend(t, "mail1"), startBackend(t, "mail2")
	pool := poolOf(b1, b2)
	path := t.TempDir() + "/users.map"
	wiretest.WriteFile(t, path, "alice mail1\n")
	r, err := proxy.NewRouter(proxy.RouteConfig{By: proxy.RouteMap, File: path}, pool, quiet)
	if err != nil {
		t.Fatal(err)
	}
	addr := start(t, &Frontend{Pool: pool, Router: r})
	b1.Close() // alice's server is gone; mail2 holds an empty mailbox for her
	c := greeted(t, addr)
	c.Send("USER alice", "PASS demo")
	c.Expect("+OK")
	c.Expect("-ERR [SYS/TEMP]")
	if got := b2.Logins(); len(got) != 0 {
		t.Fatalf("mail2 saw logins %q: alice was sent to someone else's server", got)
	}
}

func TestBruteForceIsThrottledPerAddress(t *testing.T) {
	be := startBackend(t, "mail1")
	th := &proxy.Throttle{Limit: 5, AddressLimit: 5, Delay: time.Millisecond}
	addr := start(t, &Frontend{Pool: poolOf(be), Link: proxy.Link{Throttle: th}})
	c := greeted(t, addr)
	for i := 1; i <= 20; i++ {
		c.Send("USER alice", "PASS guess")
		c.Expect("+OK")
		if i == 5 {
			// The fifth failure blocks the address: answered, then closed.
			c.Expect("-ERR [AUTH]")
			c.ExpectClosed()
			c = greeted(t, addr)
			continue
		}
		if i > 5 {
			// Blocked: refused without asking the back-end, even for the
			// right password.
			c.Expect("-ERR [SYS/TEMP] Too many failed logins")
			c.ExpectClosed()
			c = greeted(t, addr)
			continue
		}
		c.Expect("-ERR [AUTH]")
	}
	c.Send("USER bob", "PASS demo")
	c.Expect("+OK")
	c.Expect("-ERR [SYS/TEMP] Too many failed logins")
	// Another address with another user is not affected.
	other := wiretest.DialFrom(t, "127.0.0.2", addr)
	other.Expect("+OK POP3 ready")
	other.Send("USER bob", "PASS demo")
	other.Expect("+OK")
	other.Expect("+OK mail1: bob")
}

func TestPreauthLimits(t *testing.T) {
	addr := start(t, &Frontend{Pool: poolOf(), Config: Config{MaxLine: 100, MaxCommands: 3, PreauthTimeout: 300 * time.Millisecond}})
	c := greeted(t, addr)
	c.Send("USER " + strings.Repeat("x", 200))
	c.Expect("-ERR Line too long")
	c.ExpectClosed()

	c = greeted(t, addr)
	c.Send("NOOP", "NOOP", "NOOP", "NOOP")
	c.Expect("-ERR")
	c.Expect("-ERR")
	c.Expect("-ERR")
	c.Expect("-ERR Too many commands")
	c.ExpectClosed()

	c = greeted(t, addr)
	c.Expect("-ERR Disconnected for inactivity")
	c.ExpectClosed()
}

func TestGoodbyeOnShutdownAndRefusal(t *testing.T) {
	srv := &proxy.Server{Name: "pop3", Handler: &Frontend{Pool: poolOf(), Link: proxy.Link{Log: quiet}}, Log: quiet, MaxPerIP: 1}
	addr := wiretest.Serve(t, srv)
	c := greeted(t, addr)
	extra := wiretest.Dial(t, addr)
	extra.Expect("-ERR [SYS/TEMP] Too many connections")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	go srv.Shutdown(ctx)
	c.Expect("-ERR [SYS/TEMP] Server shutting down")
	c.ExpectClosed()
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{Forward: "id"}, {BackendLogin: "apop"}, {MaxLine: 10}, {Greeting: "a\r\nb"}, {Capabilities: []string{""}}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v was accepted", c)
		}
	}
	var c Config
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestOverlongSASLResponseEndsTheSession(t *testing.T) {
	addr := start(t, &Frontend{Pool: poolOf(), Config: Config{MaxLine: 100}})
	c := greeted(t, addr)
	c.Send("AUTH PLAIN")
	c.Expect("+ ")
	c.Send(strings.Repeat("QUFB", 50))
	c.Expect("-ERR Line too long")
	c.ExpectClosed()
}
