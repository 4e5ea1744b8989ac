package imap

import (
	"bufio"
	"log/slog"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/imap/imaptest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// wait bounds every read, write and dial a test makes.
const wait = wiretest.Wait

// quiet is the logger of servers whose log lines a test does not read.
var quiet = slog.New(slog.DiscardHandler)

// startBackend starts an imaptest back-end with the demo users alice and
// bob, password "demo", each with one message naming the back-end.
func startBackend(t testing.TB, name string, opt ...func(*imaptest.Server)) *imaptest.Server {
	t.Helper()
	s := imaptest.NewUnstartedServer(name)
	for _, o := range opt {
		o(s)
	}
	for _, u := range []string{"alice", "bob"} {
		s.AddUser(u, "demo", []byte("Subject: for "+u+" on "+name+"\r\n\r\nhello\r\n"))
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// poolOf is a pool over back-ends named as their servers.
func poolOf(bs ...*imaptest.Server) *proxy.Pool {
	p := &proxy.Pool{Name: "imap", ConnectTimeout: wait}
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
	return wiretest.Serve(t, &proxy.Server{Name: "imap", Handler: f, Log: quiet})
}

// greeted connects and reads gatehouse's greeting.
func greeted(t testing.TB, addr string) *wiretest.Conn {
	t.Helper()
	c := wiretest.Dial(t, addr)
	c.Expect("* OK [CAPABILITY IMAP4rev1 ")
	return c
}

// loggedIn is greeted plus LOGIN, answered by the back-end's OK.
func loggedIn(t testing.TB, addr, user string) *wiretest.Conn {
	t.Helper()
	c := greeted(t, addr)
	c.Send("a1 LOGIN " + user + " demo")
	c.Expect("a1 OK ")
	return c
}

// until reads lines up to the one tagged tag and returns them all.
func until(c *wiretest.Conn, tag string) []string {
	c.T.Helper()
	var out []string
	for range 1000 {
		l := c.Line()
		out = append(out, l)
		if strings.HasPrefix(l, tag+" ") {
			return out
		}
	}
	c.T.Fatalf("no line tagged %s in %q", tag, out)
	return nil
}

// containsPrefix reports whether a line of lines starts with prefix.
func containsPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) { wiretest.Main(m) }

func bufioString(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
