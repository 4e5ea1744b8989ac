package pop3

import (
	"log/slog"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/pop3/pop3test"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// wait bounds every read, write and dial a test makes.
const wait = wiretest.Wait

// quiet is the logger of servers whose log lines a test does not read.
var quiet = slog.New(slog.DiscardHandler)

// mailboxes are the demo users: alice and bob, password "demo".
func mailboxes(tag string) map[string]*pop3test.Mailbox {
	return map[string]*pop3test.Mailbox{
		"alice": {Password: "demo", Messages: [][]byte{[]byte("Subject: for alice on " + tag + "\n\nhello\n")}},
		"bob":   {Password: "demo", Messages: [][]byte{[]byte("Subject: for bob on " + tag + "\n\nhi\n")}},
	}
}

// startBackend starts a pop3test back-end holding the demo mailboxes.
func startBackend(t testing.TB, name string, opt ...func(*pop3test.Server)) *pop3test.Server {
	t.Helper()
	s := pop3test.NewUnstartedServer(name)
	s.Mailboxes = mailboxes(name)
	for _, o := range opt {
		o(s)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// poolOf is a pool over back-ends named as their servers.
func poolOf(bs ...*pop3test.Server) *proxy.Pool {
	p := &proxy.Pool{Name: "pop3", ConnectTimeout: wait}
	for _, b := range bs {
		p.Backends = append(p.Backends, proxy.NewBackend(b.Name, b.Addr, 1))
	}
	return p
}

// start runs f, quiet unless it has a logger, behind a proxy.Server on
// 127.0.0.1:0 and returns its address; the server is shut down when the
// test ends.
func start(t testing.TB, f *Frontend) string {
	t.Helper()
	if f.Log == nil {
		f.Log = quiet
	}
	return wiretest.Serve(t, &proxy.Server{Name: "pop3", Handler: f, Log: quiet})
}

// greeted connects and reads gatehouse's greeting.
func greeted(t testing.TB, addr string) *wiretest.Conn {
	t.Helper()
	c := wiretest.Dial(t, addr)
	c.Expect("+OK POP3 ready")
	return c
}

// loggedIn is greeted plus USER/PASS, answered by the back-end's +OK.
func loggedIn(t testing.TB, addr, user string) *wiretest.Conn {
	t.Helper()
	c := greeted(t, addr)
	c.Send("USER " + user)
	c.Expect("+OK")
	c.Send("PASS demo")
	c.Expect("+OK ")
	return c
}

// multiline reads a multi-line response's body up to the "." line.
func multiline(c *wiretest.Conn) []string {
	c.T.Helper()
	var out []string
	for {
		l := c.Line()
		if l == "." {
			return out
		}
		out = append(out, l)
	}
}

// contains reports whether lines holds s.
func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) { wiretest.Main(m) }
