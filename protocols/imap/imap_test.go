package imap

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/imap/imaptest"
	"github.com/gatehouse-proxy/gatehouse/protocols/internal/maillogin"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/pires/go-proxyproto"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestLoginRelaysTheBackendsCapabilitiesThenSplices(t *testing.T) {
	be := startBackend(t, "mail1")
	addr := start(t, &Frontend{Pool: poolOf(be)})
	c := greeted(t, addr)
	c.Send("a0 CAPABILITY")
	caps := until(c, "a0")
	if !strings.Contains(caps[0], " AUTH=PLAIN") || strings.Contains(caps[0], "STARTTLS") || caps[1] != "a0 OK CAPABILITY completed" {
		t.Fatalf("CAPABILITY = %q", caps)
	}
	c.Send("a1 NOOP")
	c.Expect("a1 OK")
	c.Send("a2 LOGIN alice demo")
	// The client's tag, the back-end's text and post-login capabilities.
	ok := c.Expect("a2 OK ")
	if !strings.Contains(ok, "[CAPABILITY ") || strings.Contains(ok, "AUTH=") {
		t.Fatalf("LOGIN answered %q, want the back-end's post-login CAPABILITY code", ok)
	}
	c.Send("a3 SELECT INBOX")
	if lines := until(c, "a3"); !containsPrefix(lines, "* 1 EXISTS") {
		t.Fatalf("SELECT = %q", lines)
	}
	c.Send("a4 FETCH 1 BODY[HEADER.FIELDS (SUBJECT)]")
	if lines := until(c, "a4"); !containsPrefix(lines, "Subject: for alice on mail1") {
		t.Fatalf("FETCH = %q", lines)
	}
	c.Send("a5 LOGOUT")
	until(c, "a5")
	c.ExpectClosed()
}

func TestLoginArgumentForms(t *testing.T) {
	be := startBackend(t, "mail1")
	addr := start(t, &Frontend{Pool: poolOf(be)})
	for name, steps := range map[string][][2]string{
		"quoted": {{`q LOGIN "alice" "demo"`, "q OK"}},
		// A synchronizing literal is invited with "+" (RFC 9051 section 4.3).
		"literal": {{"l LOGIN {5}", "+ "}, {"alice {4}", "+ "}, {"demo", "l OK"}},
		// A non-synchronizing one is not (RFC 7888).
		"literal+": {{"n LOGIN {5+}\r\nalice {4+}\r\ndemo", "n OK"}},
		"plain-ir": {{"p AUTHENTICATE PLAIN " + b64("\x00bob\x00demo"), "p OK"}},
		"plain":    {{"p AUTHENTICATE PLAIN", "+ "}, {b64("\x00bob\x00demo"), "p OK"}},
		"login":    {{"p AUTHENTICATE LOGIN", "+ " + b64("Username:")}, {b64("bob"), "+ " + b64("Password:")}, {b64("demo"), "p OK"}},
		"cancel":   {{"p AUTHENTICATE PLAIN", "+ "}, {"*", "p BAD AUTHENTICATE cancelled"}, {"p2 LOGIN bob demo", "p2 OK"}},
	} {
		t.Run(name, func(t *testing.T) {
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
		c.Send("x LOGIN " + user + " " + pass)
		return c.Expect("x NO ")
	}
	wrong, unknown := reply("alice", "guess"), reply("mallory", "demo")
	if wrong != unknown || !strings.Contains(wrong, "[AUTHENTICATIONFAILED]") {
		t.Fatalf("wrong password got %q, unknown user %q", wrong, unknown)
	}
}

func TestBadInputGetsErrorsNotCrashes(t *testing.T) {
	addr := start(t, &Frontend{Pool: poolOf(), Config: Config{MaxLine: 200, MaxLiteral: 64}})
	c := greeted(t, addr)
	for _, tc := range []struct{ send, want string }{
		{"", "* BAD"},
		{"+ LOGIN a b", "* BAD"},
		{"a", "a BAD"},
		{"a SELECT INBOX", "a BAD"},
		{"a ENABLE UTF8=ACCEPT", "a BAD"},
		{"a LOGIN onlyuser", "a BAD"},
		{`a LOGIN "unterminated`, "a BAD"},
		{`a LOGIN "bad\escape" x`, "a BAD"},
		{"a LOGIN {x}", "a BAD"},
		{"a LOGIN {3} x", "a BAD"},
		// Too big to invite: no "+", the client does not send it.
		{"a LOGIN {65}", "a BAD [TOOBIG]"},
		{"a ID (\"name\")", "a BAD"},
		{"a ID ((((x))))", "a BAD"},
		{"a AUTHENTICATE CRAM-MD5", "a NO"},
		{"a AUTHENTICATE PLAIN !!!", "a BAD"},
	} {
		c.Send(tc.send)
		c.Expect(tc.want)
	}
	c.Send("z LOGOUT")
	c.Expect("* BYE")
	c.Expect("z OK")
	c.ExpectClosed()

	// A non-synchronizing literal over the limit is already on its way:
	// the session ends.
	c = greeted(t, addr)
	c.Send("a LOGIN {65+}")
	c.Expect("* BYE")
	c.ExpectClosed()

	c = greeted(t, addr)
	c.Send("a LOGIN " + strings.Repeat("x", 300) + " y")
	c.Expect("* BYE Line too long")
	c.ExpectClosed()
}

func TestPreauthCommandCountAndTimeout(t *testing.T) {
	addr := start(t, &Frontend{Pool: poolOf(), Config: Config{MaxCommands: 3, PreauthTimeout: 300 * time.Millisecond}})
	c := greeted(t, addr)
	c.Send("a NOOP", "b NOOP", "c NOOP", "d NOOP")
	c.Expect("a OK")
	c.Expect("b OK")
	c.Expect("c OK")
	c.Expect("* BYE Too many commands")
	c.ExpectClosed()

	c = greeted(t, addr)
	c.Expect("* BYE Autologout")
	c.ExpectClosed()
}

func TestIDIsAnsweredAndKeptWithoutXFields(t *testing.T) {
	conn := wiretest.Script(nil, 143)
	s := &session{cfg: &Config{Forward: ForwardID}}
	s.Raw, s.Client = conn, maillogin.AddrPort(conn.RemoteAddr())
	p := &parser{r: bufioString(`a ID ("name" "Thunderbird" "x-originating-ip" "6.6.6.6" "os" NIL)` + "\r\n"), maxLiteral: 100}
	cmd, err := p.readCommand()
	if err != nil {
		t.Fatal(err)
	}
	s.id, _ = parseID(cmd.args[0].list)
	got := s.backendID()
	want := `("x-originating-ip" "192.0.2.7" "x-originating-port" "51234" "x-connected-ip" "127.0.0.1" "x-connected-port" "143" "name" "Thunderbird" "os" NIL)`
	if got != want {
		t.Fatalf("ID to the back-end = %s\nwant %s", got, want)
	}
}

func TestSTARTTLSAtTheEdgeDiscardsInjectedCommands(t *testing.T) {
	be := startBackend(t, "mail1")
	addr := start(t, &Frontend{Pool: poolOf(be), Link: proxy.Link{EdgeTLS: wiretest.ServerTLS(), TLSMode: proxy.TLSStartTLS, TLSRequired: true}})
	c := greeted(t, addr)
	c.Send("a CAPABILITY")
	if caps := until(c, "a"); !strings.Contains(caps[0], "STARTTLS") || !strings.Contains(caps[0], "LOGINDISABLED") || strings.Contains(caps[0], "AUTH=") {
		t.Fatalf("CAPABILITY before TLS = %q", caps)
	}
	c.Send("b LOGIN alice demo")
	c.Expect("b NO [PRIVACYREQUIRED]")
	// The injection probe: b LOGIN pipelined behind STARTTLS must never
	// run, neither in clear nor inside TLS.
	c.Send("a STARTTLS", "b LOGIN alice demo")
	c.Expect("a OK Begin TLS")
	c.StartTLS(wiretest.ClientTLS())
	c.ExpectSilence(200 * time.Millisecond)
	if got := be.Logins(); len(got) != 0 {
		t.Fatalf("injected LOGIN reached the back-end: %q", got)
	}
	c.Send("c CAPABILITY")
	if caps := until(c, "c"); strings.Contains(caps[0], "STARTTLS") || strings.Contains(caps[0], "LOGINDISABLED") {
		t.Fatalf("CAPABILITY inside TLS = %q", caps)
	}
	c.Send("d STARTTLS")
	c.Expect("d BAD")
	c.Send("e LOGIN alice demo")
	c.Expect("e OK")
}

func TestImplicitTLSAndBackendSTARTTLS(t *testing.T) {
	be := startBackend(t, "mail1", func(s *imaptest.Server) { s.TLSConfig, s.AuthTLSOnly = wiretest.ServerTLS(), true })
	addr := start(t, &Frontend{Pool: poolOf(be), Link: proxy.Link{EdgeTLS: wiretest.ServerTLS(), TLSMode: proxy.TLSImplicit, BackendTLS: wiretest.ClientTLS(), BackendTLSMode: proxy.TLSStartTLS}})
	c := wiretest.Dial(t, addr)
	c.StartTLS(wiretest.ClientTLS())
	c.Expect("* OK [CAPABILITY ")
	c.Send("a LOGIN bob demo")
	c.Expect("a OK")
	if rec := be.LoginRecords(); len(rec) != 1 || !rec[0].TLS {
		t.Fatalf("back-end logins = %+v, want one inside TLS", rec)
	}
}

func TestProxyHeaderCarriesTheClientAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := imaptest.NewUnstartedServer("mail1")
	be.AddUser("alice", "demo")
	be.StartOn(&proxyproto.Listener{Listener: ln})
	t.Cleanup(be.Close)
	addr := start(t, &Frontend{Pool: poolOf(be), Link: proxy.Link{ProxyVersion: 1}})
	c := wiretest.DialFrom(t, "127.0.0.3", addr)
	c.Expect("* OK")
	c.Send("a LOGIN alice demo")
	c.Expect("a OK")
	if rec := be.LoginRecords(); len(rec) != 1 || !strings.HasPrefix(rec[0].RemoteAddr, "127.0.0.3:") {
		t.Fatalf("back-end saw %+v, want the client's 127.0.0.3", rec)
	}
}

func TestPipelinedAfterLoginReachesTheBackend(t *testing.T) {
	be := startBackend(t, "mail1")
	addr := start(t, &Frontend{Pool: poolOf(be)})
	c := greeted(t, addr)
	c.Send("a LOGIN alice demo", "b SELECT INBOX", "c LOGOUT")
	c.Expect("a OK")
	if lines := until(c, "b"); !containsPrefix(lines, "b OK") {
		t.Fatalf("SELECT = %q", lines)
	}
	until(c, "c")
}

func TestMappedBackendDownIsUnavailable(t *testing.T) {
	b1, b2 := startBackend(t, "mail1"), startBackend(t, "mail2")
	pool := poolOf(b1, b2)
	path := t.TempDir() + "/users.map"
	wiretest.WriteFile(t, path, "alice mail1\n")
	r, err := proxy.NewRouter(proxy.RouteConfig{By: proxy.RouteMap, File: path}, pool, quiet)
	if err != nil {
		t.Fatal(err)
	}
	addr := start(t, &Frontend{Pool: pool, Router: r})
	b1.Close()
	c := greeted(t, addr)
	c.Send("a LOGIN alice demo")
	c.Expect("a NO [UNAVAILABLE]")
	if got := b2.Logins(); len(got) != 0 {
		t.Fatalf("mail2 saw logins %q: alice was sent to someone else's server", got)
	}
}

func TestBruteForceIsThrottled(t *testing.T) {
	be := startBackend(t, "mail1")
	th := &proxy.Throttle{Limit: 5, Delay: time.Millisecond}
	addr := start(t, &Frontend{Pool: poolOf(be), Link: proxy.Link{Throttle: th}})
	c := greeted(t, addr)
	for i := 1; i <= 20; i++ {
		tag := fmt.Sprintf("t%d", i)
		c.Send(tag + " LOGIN alice guess")
		switch {
		case i < 5:
			c.Expect(tag + " NO [AUTHENTICATIONFAILED]")
			continue
		case i == 5:
			c.Expect(tag + " NO [AUTHENTICATIONFAILED]")
		default:
			c.Expect(tag + " NO [UNAVAILABLE] Too many failed logins")
		}
		c.Expect("* BYE")
		c.ExpectClosed()
		c = greeted(t, addr)
	}
	other := wiretest.DialFrom(t, "127.0.0.2", addr)
	other.Expect("* OK")
	other.Send("a LOGIN bob demo")
	other.Expect("a OK")
}

func TestGoodbyeOnShutdownAndRefusal(t *testing.T) {
	srv := &proxy.Server{Name: "imap", Handler: &Frontend{Pool: poolOf(), Link: proxy.Link{Log: quiet}}, Log: quiet, MaxPerIP: 1}
	addr := wiretest.Serve(t, srv)
	c := greeted(t, addr)
	extra := wiretest.Dial(t, addr)
	extra.Expect("* BYE [UNAVAILABLE] Too many connections")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	go srv.Shutdown(ctx)
	c.Expect("* BYE [UNAVAILABLE] Server shutting down")
	c.ExpectClosed()
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{Forward: "xclient"}, {MaxLine: 10}, {Greeting: "a\nb"}, {Capabilities: []string{"A B"}}, {MaxLiteral: -1}} {
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
