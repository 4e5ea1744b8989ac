package imap

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/dovecottest"
	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// imaplibScript logs in with Python's imaplib (STARTTLS or implicit TLS),
// selects INBOX, fetches every message's subject and prints them.
const imaplibScript = `
import imaplib, json, ssl, sys
host, port, mode, user, pw, cafile = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
if mode == "implicit":
    m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx, timeout=5)
else:
    m = imaplib.IMAP4(host, int(port), timeout=5)
    m.starttls(ssl_context=ctx)
m.login(user, pw)
typ, data = m.select("INBOX")
n = int(data[0])
subjects = []
if n:
    typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    for part in data:
        if isinstance(part, tuple):
            subjects.append(part[1].decode().strip())
m.logout()
print(json.dumps({"count": n, "subjects": subjects}))
`

// dovecotPool is a pool over Dovecot instances' plain IMAP listeners.
func dovecotPool(ds ...*dovecottest.Server) *proxy.Pool {
	p := &proxy.Pool{Name: "imap", ConnectTimeout: wait}
	for _, d := range ds {
		p.Backends = append(p.Backends, proxy.NewBackend(d.Name, d.IMAP, 1))
	}
	return p
}

type imaplibResult struct {
	Count    int
	Subjects []string
}

func imaplib(t testing.TB, addr, mode, user string) (res imaplibResult) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	wiretest.Python(t, &res, imaplibScript, host, port, mode, user, "demo", wiretest.CertPEM(t))
	return res
}

func TestIntegrationImaplibAndCurlReachEachUsersDovecot(t *testing.T) {
	mail1, mail2 := dovecottest.Start(t, "mail1", "alice"), dovecottest.Start(t, "mail2", "bob")
	pool := dovecotPool(mail1, mail2)
	path := filepath.Join(t.TempDir(), "users.map")
	wiretest.WriteFile(t, path, "alice mail1\nbob mail2\n")
	r, err := proxy.NewRouter(proxy.RouteConfig{By: proxy.RouteMap, File: path}, pool, quiet)
	if err != nil {
		t.Fatal(err)
	}
	starttls := start(t, &Frontend{Pool: pool, Router: r, Link: proxy.Link{EdgeTLS: wiretest.ServerTLS(), TLSMode: proxy.TLSStartTLS, TLSRequired: true}})
	implicit := start(t, &Frontend{Pool: pool, Router: r, Link: proxy.Link{EdgeTLS: wiretest.ServerTLS(), TLSMode: proxy.TLSImplicit}})
	for _, tc := range []struct{ addr, mode, user, subject string }{
		{starttls, "starttls", "alice", "Subject: alice on mail1"},
		{starttls, "starttls", "bob", "Subject: bob on mail2"},
		{implicit, "implicit", "alice", "Subject: alice on mail1"},
		{implicit, "implicit", "bob", "Subject: bob on mail2"},
	} {
		res := imaplib(t, tc.addr, tc.mode, tc.user)
		if res.Count != 1 || len(res.Subjects) != 1 || res.Subjects[0] != tc.subject {
			t.Errorf("imaplib %s as %s got %+v, want one message %q", tc.mode, tc.user, res, tc.subject)
		}
	}
	for url, user := range map[string]string{"imaps://" + implicit + "/INBOX;MAILINDEX=1": "bob", "imap://" + starttls + "/INBOX;MAILINDEX=1": "alice"} {
		if out, err := wiretest.Curl(t, url, user); err != nil || !strings.Contains(string(out), "Subject: "+user+" on ") {
			t.Errorf("curl %s as %s: %v\n%s", url, user, err, out)
		}
	}
}

func TestIntegrationLiteralLoginRelaysDovecotCapabilities(t *testing.T) {
	d := dovecottest.Start(t, "mail1", "alice")
	addr := start(t, &Frontend{Pool: dovecotPool(d)})
	c := greeted(t, addr)
	c.Send("a1 LOGIN {5+}\r\nalice {4}")
	c.Expect("+ ")
	c.Send("demo")
	// Dovecot's post-login capabilities (IDLE, ENABLE…) under our tag.
	ok := c.Expect("a1 OK [CAPABILITY IMAP4rev1 ")
	if !strings.Contains(ok, " IDLE") || !strings.Contains(ok, "Logged in") {
		t.Fatalf("LOGIN answered %q", ok)
	}
	c.Send("a2 SELECT INBOX")
	if lines := until(c, "a2"); !containsPrefix(lines, "* 1 EXISTS") {
		t.Fatalf("SELECT = %q", lines)
	}
}

func TestIntegrationDovecotLogsTheClientAddress(t *testing.T) {
	d := dovecottest.Start(t, "mail1", "alice", "bob")
	// ID with x-originating-ip on the plain listener; the client's own
	// x- fields never get through.
	id := start(t, &Frontend{Pool: dovecotPool(d), Config: Config{Forward: ForwardID}})
	c := wiretest.DialFrom(t, "127.0.0.5", id)
	c.Expect("* OK")
	c.Send(`a ID ("name" "probe" "x-originating-ip" "198.51.100.66")`)
	c.Expect(`* ID ("name" "gatehouse")`)
	c.Expect("a OK")
	c.Send("b LOGIN alice demo")
	c.Expect("b OK")
	d.WaitLog(t, "user=<alice>, method=PLAIN, rip=127.0.0.5,")
	if strings.Contains(d.Log(), "198.51.100.66") {
		t.Fatalf("the client's own x-originating-ip reached Dovecot:\n%s", d.Log())
	}
	// A PROXY v1 header on the haproxy listener.
	pool := &proxy.Pool{Name: "imap", Backends: []*proxy.Backend{proxy.NewBackend("mail1", d.IMAPProxy, 1)}}
	proxied := start(t, &Frontend{Pool: pool, Link: proxy.Link{ProxyVersion: 1}})
	c = wiretest.DialFrom(t, "127.0.0.6", proxied)
	c.Expect("* OK")
	c.Send("b LOGIN bob demo")
	c.Expect("b OK")
	d.WaitLog(t, "user=<bob>, method=PLAIN, rip=127.0.0.6,")
}

func TestIntegrationHTTPRouting(t *testing.T) {
	mail1, mail2 := dovecottest.Start(t, "mail1", "alice"), dovecottest.Start(t, "mail2", "bob")
	auth := dovecottest.AuthHTTP("imap", map[string]string{"alice": mail1.IMAP, "bob": mail2.IMAP})
	defer auth.Close()
	pool := dovecotPool(mail1, mail2)
	r, err := proxy.NewRouter(proxy.RouteConfig{By: proxy.RouteHTTP, URL: auth.URL, CacheTTL: -1}, pool, quiet)
	if err != nil {
		t.Fatal(err)
	}
	addr := start(t, &Frontend{Pool: pool, Router: r})
	for user, want := range map[string]string{"alice": "Subject: alice on mail1", "bob": "Subject: bob on mail2"} {
		c := loggedIn(t, addr, user)
		c.Send("f SELECT INBOX", "g FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
		until(c, "f")
		if lines := until(c, "g"); !containsPrefix(lines, want) {
			t.Errorf("%s reached %q, want %q", user, lines, want)
		}
	}
	c := greeted(t, addr)
	c.Send("a LOGIN alice wrong")
	c.Expect("a NO [AUTHENTICATIONFAILED] Invalid login or password")
	auth.Close()
	c.Send("b LOGIN bob demo")
	c.Expect("b NO [UNAVAILABLE]")
}

// Nobody can lock a mailbox: a guesser who tries alice's password from one
// address is blocked there (even with the right password), while alice
// from another address logs in to her real Dovecot.
func TestIntegrationGuesserBlockedAliceNotLockedOut(t *testing.T) {
	d := dovecottest.Start(t, "mail1", "alice")
	th := &proxy.Throttle{Limit: 3, Delay: time.Millisecond} // 3 wrong passwords for alice from one address
	addr := start(t, &Frontend{Pool: dovecotPool(d), Link: proxy.Link{Throttle: th}})
	login := func(src, pass string) string {
		c := wiretest.DialFrom(t, src, addr)
		c.Conn.SetDeadline(time.Now().Add(30 * time.Second)) // Dovecot's own auth penalty slows failures
		c.Expect("* OK")
		c.Send("a LOGIN alice " + pass)
		for {
			l := c.Line()
			if strings.HasPrefix(l, "a ") || strings.HasPrefix(l, "* BYE") {
				return l
			}
		}
	}
	for i := range 3 {
		if l := login("127.0.0.1", fmt.Sprintf("wrong%d", i)); !strings.HasPrefix(l, "a NO ") {
			t.Fatalf("guess %d: %q", i, l)
		}
	}
	if l := login("127.0.0.1", "demo"); strings.HasPrefix(l, "a OK") {
		t.Fatalf("the blocked guesser logged in with the right password: %q", l)
	}
	if l := login("127.0.0.2", "demo"); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("alice from another address was refused: %q", l)
	}
}
