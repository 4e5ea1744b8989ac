package pop3

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/dovecottest"
	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// poplibScript logs in with Python's poplib (STLS or implicit TLS), lists
// and fetches every message, and prints the count and the subjects.
const poplibScript = `
import json, poplib, ssl, sys
host, port, mode, user, pw, cafile = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
if mode == "implicit":
    p = poplib.POP3_SSL(host, int(port), context=ctx, timeout=5)
else:
    p = poplib.POP3(host, int(port), timeout=5)
    p.stls(context=ctx)
p.user(user)
p.pass_(pw)
n, _ = p.stat()
subjects = []
for i in range(1, n + 1):
    _, lines, _ = p.retr(i)
    subjects += [l.decode() for l in lines if l.startswith(b"Subject:")]
p.quit()
print(json.dumps({"count": n, "subjects": subjects}))
`

// dovecotPool is a pool over Dovecot instances' plain POP3 listeners.
func dovecotPool(ds ...*dovecottest.Server) *proxy.Pool {
	p := &proxy.Pool{Name: "pop3", ConnectTimeout: wait}
	for _, d := range ds {
		p.Backends = append(p.Backends, proxy.NewBackend(d.Name, d.POP3, 1))
	}
	return p
}

// mapRouter routes by a map file it writes with body.
func mapRouter(t testing.TB, pool *proxy.Pool, body string) (proxy.Router, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.map")
	wiretest.WriteFile(t, path, body)
	r, err := proxy.NewRouter(proxy.RouteConfig{By: proxy.RouteMap, File: path, Reload: time.Nanosecond}, pool, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return r, path
}

type poplibResult struct {
	Count    int
	Subjects []string
}

func poplib(t testing.TB, addr, mode, user string) (res poplibResult) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	wiretest.Python(t, &res, poplibScript, host, port, mode, user, "demo", wiretest.CertPEM(t))
	return res
}

func TestIntegrationPoplibAndCurlReachEachUsersDovecot(t *testing.T) {
	mail1, mail2 := dovecottest.Start(t, "mail1", "alice"), dovecottest.Start(t, "mail2", "bob")
	pool := dovecotPool(mail1, mail2)
	r, _ := mapRouter(t, pool, "alice mail1\nbob mail2\n")
	starttls := start(t, &Frontend{Pool: pool, Router: r, Link: proxy.Link{EdgeTLS: wiretest.ServerTLS(), TLSMode: proxy.TLSStartTLS, TLSRequired: true}})
	implicit := start(t, &Frontend{Pool: pool, Router: r, Link: proxy.Link{EdgeTLS: wiretest.ServerTLS(), TLSMode: proxy.TLSImplicit}})
	for _, tc := range []struct{ addr, mode, user, subject string }{
		{starttls, "stls", "alice", "Subject: alice on mail1"},
		{starttls, "stls", "bob", "Subject: bob on mail2"},
		{implicit, "implicit", "alice", "Subject: alice on mail1"},
		{implicit, "implicit", "bob", "Subject: bob on mail2"},
	} {
		res := poplib(t, tc.addr, tc.mode, tc.user)
		if res.Count != 1 || len(res.Subjects) != 1 || res.Subjects[0] != tc.subject {
			t.Errorf("poplib %s as %s got %+v, want one message %q", tc.mode, tc.user, res, tc.subject)
		}
	}
	for url, user := range map[string]string{"pop3s://" + implicit + "/1": "bob", "pop3://" + starttls + "/1": "alice"} {
		if out, err := wiretest.Curl(t, url, user); err != nil || !strings.Contains(string(out), "Subject: "+user+" on ") {
			t.Errorf("curl %s as %s: %v\n%s", url, user, err, out)
		}
	}
}

func TestIntegrationMoveAMailboxByEditingTheMap(t *testing.T) {
	mail1, mail2 := dovecottest.Start(t, "mail1", "alice"), dovecottest.Start(t, "mail2", "alice")
	pool := dovecotPool(mail1, mail2)
	r, path := mapRouter(t, pool, "alice mail1\n")
	addr := start(t, &Frontend{Pool: pool, Router: r})
	before := loggedIn(t, addr, "alice")
	before.Send("RETR 1")
	before.Expect("+OK")
	if body := multiline(before); !contains(body, "Subject: alice on mail1") {
		t.Fatalf("before the move: %q", body)
	}
	// The move: one line in the file, no restart.
	wiretest.WriteFile(t, path, "alice mail2 # moved\n")
	bumpMtime(t, path)
	after := loggedIn(t, addr, "alice")
	after.Send("RETR 1")
	after.Expect("+OK")
	if body := multiline(after); !contains(body, "Subject: alice on mail2") {
		t.Fatalf("after the move the next login reached %q, want mail2", body)
	}
	// The session opened before the move still talks to mail1.
	before.Send("RETR 1")
	before.Expect("+OK")
	if body := multiline(before); !contains(body, "Subject: alice on mail1") {
		t.Fatalf("the session in progress was moved: %q", body)
	}
	before.Send("QUIT")
	before.Expect("+OK")
}

func TestIntegrationDovecotLogsTheClientAddress(t *testing.T) {
	d := dovecottest.Start(t, "mail1", "alice", "bob")
	// XCLIENT on the plain listener.
	xclient := start(t, &Frontend{Pool: dovecotPool(d), Config: Config{Forward: ForwardXClient}})
	c := wiretest.DialFrom(t, "127.0.0.5", xclient)
	c.Expect("+OK")
	c.Send("USER alice", "PASS demo")
	c.Expect("+OK")
	c.Expect("+OK")
	d.WaitLog(t, "user=<alice>, method=PLAIN, rip=127.0.0.5,")
	// A PROXY v2 header on the haproxy listener.
	pool := &proxy.Pool{Name: "pop3", Backends: []*proxy.Backend{proxy.NewBackend("mail1", d.POP3Proxy, 1)}}
	proxied := start(t, &Frontend{Pool: pool, Link: proxy.Link{ProxyVersion: 2}})
	c = wiretest.DialFrom(t, "127.0.0.6", proxied)
	c.Expect("+OK")
	c.Send("USER bob", "PASS demo")
	c.Expect("+OK")
	c.Expect("+OK")
	d.WaitLog(t, "user=<bob>, method=PLAIN, rip=127.0.0.6,")
}

// Dovecot delays further logins from an address that failed one (its
// anvil auth penalty, 2s doubling), so each attempt here comes from its
// own address, which XCLIENT passes on. Throttling 20 attempts is shown
// against pop3test in TestBruteForceIsThrottledPerAddress.
func TestIntegrationUnknownUserAndWrongPasswordReadAlike(t *testing.T) {
	d := dovecottest.Start(t, "mail1", "alice")
	addr := start(t, &Frontend{Pool: dovecotPool(d),
		Config: Config{Forward: ForwardXClient}, Link: proxy.Link{Throttle: &proxy.Throttle{Delay: time.Millisecond}},
	})
	reply := func(src, user string) string {
		c := wiretest.DialFrom(t, src, addr)
		c.Expect("+OK")
		c.Send("USER "+user, "PASS wrong")
		c.Expect("+OK")
		return c.Line()
	}
	wrong, unknown := reply("127.0.0.7", "alice"), reply("127.0.0.8", "nosuchuser")
	if wrong != unknown || !strings.HasPrefix(wrong, "-ERR [AUTH]") {
		t.Fatalf("wrong password got %q, unknown user %q", wrong, unknown)
	}
	d.WaitLog(t, "passwd-file(nosuchuser,127.0.0.8,")
}

func TestIntegrationHTTPRouting(t *testing.T) {
	mail1, mail2 := dovecottest.Start(t, "mail1", "alice"), dovecottest.Start(t, "mail2", "bob")
	auth := dovecottest.AuthHTTP("pop3", map[string]string{"alice": mail1.POP3, "bob": mail2.POP3})
	defer auth.Close()
	pool := dovecotPool(mail1, mail2)
	// No cache: every login asks, so the outage below is seen at once.
	r, err := proxy.NewRouter(proxy.RouteConfig{By: proxy.RouteHTTP, URL: auth.URL, CacheTTL: -1}, pool, quiet)
	if err != nil {
		t.Fatal(err)
	}
	addr := start(t, &Frontend{Pool: pool, Router: r})
	for user, want := range map[string]string{"alice": "Subject: alice on mail1", "bob": "Subject: bob on mail2"} {
		c := loggedIn(t, addr, user)
		c.Send("RETR 1")
		c.Expect("+OK")
		if body := multiline(c); !contains(body, want) {
			t.Errorf("%s reached %q, want %q", user, body, want)
		}
	}
	// Auth-Status failure with Auth-Wait: -ERR, and the client may retry.
	c := greeted(t, addr)
	c.Send("USER alice", "PASS wrong")
	c.Expect("+OK")
	c.Expect("-ERR [AUTH] Invalid login or password")
	// The lookup down: a temporary error, never a guess.
	auth.Close()
	c.Send("USER bob", "PASS demo")
	c.Expect("+OK")
	c.Expect("-ERR [SYS/TEMP]")
}

// bumpMtime moves a file's modification time forward, as an edit a second
// later would, so a reload cannot miss it on a coarse clock.
func bumpMtime(t testing.TB, path string) {
	t.Helper()
	later := time.Now().Add(2 * time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
}
