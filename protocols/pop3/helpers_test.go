package pop3

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	stdtls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/pop3/pop3test"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// wait bounds every read, write and dial a test makes.
const wait = 5 * time.Second

// quiet is the logger of servers whose log lines a test does not read.
var quiet = slog.New(slog.DiscardHandler)

// testCert is a self-signed certificate for 127.0.0.1 and localhost.
var testCert = sync.OnceValue(func() stdtls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gatehouse test"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return stdtls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
})

func serverTLS() *stdtls.Config {
	return &stdtls.Config{Certificates: []stdtls.Certificate{testCert()}, MinVersion: stdtls.VersionTLS12}
}

func clientTLS() *stdtls.Config {
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(testCert().Certificate[0])
	pool.AddCert(leaf)
	return &stdtls.Config{RootCAs: pool, ServerName: "localhost"}
}

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

// start runs f behind a proxy.Server on 127.0.0.1:0 and returns its
// address; the server is shut down when the test ends.
func start(t testing.TB, f *Frontend) string {
	t.Helper()
	return startServer(t, &proxy.Server{Name: "pop3", Handler: f, Log: quiet})
}

func startServer(t testing.TB, srv *proxy.Server) string {
	t.Helper()
	if f, ok := srv.Handler.(*Frontend); ok && f.Log == nil {
		f.Log = quiet
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// client is a raw POP3 conversation.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// connect dials addr from 127.0.0.1.
func connect(t testing.TB, addr string) *client { return connectFrom(t, "127.0.0.1", addr) }

// connectFrom dials addr from the loopback address src.
func connectFrom(t testing.TB, src, addr string) *client {
	t.Helper()
	d := net.Dialer{Timeout: wait, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(wait))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

// greeted connects and reads gatehouse's greeting.
func greeted(t testing.TB, addr string) *client {
	t.Helper()
	c := connect(t, addr)
	c.expect("+OK POP3 ready")
	return c
}

// loggedIn is greeted plus USER/PASS, answered by the back-end's +OK.
func loggedIn(t testing.TB, addr, user string) *client {
	t.Helper()
	c := greeted(t, addr)
	c.send("USER " + user)
	c.expect("+OK")
	c.send("PASS demo")
	c.expect("+OK ")
	return c
}

// send writes lines in one write, each ended by CRLF.
func (c *client) send(lines ...string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(strings.Join(lines, "\r\n") + "\r\n")); err != nil {
		c.t.Fatalf("send %q: %v", lines, err)
	}
}

// line reads one line without its CRLF.
func (c *client) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %q, %v", l, err)
	}
	return strings.TrimRight(l, "\r\n")
}

// expect reads a line and wants it to start with prefix; it returns it.
func (c *client) expect(prefix string) string {
	c.t.Helper()
	l := c.line()
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("got %q, want a line starting with %q", l, prefix)
	}
	return l
}

// multiline reads a multi-line response's body up to the "." line.
func (c *client) multiline() []string {
	c.t.Helper()
	var out []string
	for {
		l := c.line()
		if l == "." {
			return out
		}
		out = append(out, l)
	}
}

// expectClosed wants the connection to end with no further byte.
func (c *client) expectClosed() {
	c.t.Helper()
	b, err := c.r.ReadByte()
	if err == nil {
		rest, _ := c.r.ReadString('\n')
		c.t.Fatalf("got %q, want the connection closed", string(b)+rest)
	}
	if !errors.Is(err, io.EOF) && !isReset(err) {
		c.t.Fatalf("read: %v, want EOF", err)
	}
}

// expectSilence wants nothing to arrive for a moment.
func (c *client) expectSilence(d time.Duration) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(d))
	defer c.conn.SetReadDeadline(time.Now().Add(wait))
	if l, err := c.r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.Fatalf("got %q, %v; want silence", l, err)
	}
}

// startTLS upgrades the client side after a +OK to STLS.
func (c *client) startTLS() {
	c.t.Helper()
	tc := stdtls.Client(c.conn, clientTLS())
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("handshake: %v", err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
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

func writeFile(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMain fails the package when goroutines outlive the tests: every
// session, splice and watcher a test starts must have ended.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 && !fuzzing() && !settled(before, 5*time.Second) {
		fmt.Fprintf(os.Stderr, "goroutines leaked: %d before the tests, %d after\n", before, runtime.NumGoroutine())
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		code = 1
	}
	os.Exit(code)
}

// fuzzing reports a -fuzz run, whose engine keeps goroutines of its own.
func fuzzing() bool {
	f := flag.Lookup("test.fuzz")
	w := flag.Lookup("test.fuzzworker")
	return (f != nil && f.Value.String() != "") || (w != nil && w.Value.String() == "true")
}

// settled waits up to d for the goroutine count to fall to at most n.
func settled(n int, d time.Duration) bool {
	for deadline := time.Now().Add(d); runtime.NumGoroutine() > n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}
