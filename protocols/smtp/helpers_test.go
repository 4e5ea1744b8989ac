package smtp

import (
	"bufio"
	"bytes"
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

	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// wait bounds every read, write and dial a test makes, so that a broken
// frontend fails a test instead of hanging it.
const wait = 5 * time.Second

// quiet is the logger of servers whose log lines a test does not read.
var quiet = slog.New(slog.DiscardHandler)

// TestMain fails the package when goroutines outlive the tests: every
// session, back-end and watcher a test starts must have ended. (The fuzz
// engine keeps a signal goroutine of its own, so fuzzing is not checked.)
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	fuzzing := flag.Lookup("test.fuzz") != nil && flag.Lookup("test.fuzz").Value.String() != ""
	if code == 0 && !fuzzing && !settled(before, 5*time.Second) {
		fmt.Fprintf(os.Stderr, "goroutines leaked: %d before the tests, %d after\n", before, runtime.NumGoroutine())
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		code = 1
	}
	os.Exit(code)
}

func settled(n int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// fixedOrder keeps the pool's config order, so a test knows which
// back-end is tried first.
type fixedOrder struct{}

func (fixedOrder) Order(_ string, usable []*proxy.Backend) []*proxy.Backend { return usable }

// newFrontend returns a relay Frontend over back-ends at addrs, tried in
// that order, named b1, b2…, with timeouts short enough for tests.
func newFrontend(addrs ...string) *Frontend {
	pool := &proxy.Pool{Name: "smtp-test", Policy: fixedOrder{}, ConnectTimeout: time.Second, PassiveFailures: -1}
	for i, a := range addrs {
		pool.Backends = append(pool.Backends, proxy.NewBackend(fmt.Sprintf("b%d", i+1), a, 1))
	}
	return &Frontend{
		Pool:     pool,
		Log:      quiet,
		Throttle: &proxy.Throttle{Delay: time.Millisecond},
		Config: Config{
			Hostname:              "gate.test",
			BackendSetupTimeout:   time.Second,
			BackendCommandTimeout: wait,
			BackendDataTimeout:    wait,
			CommandTimeout:        wait,
			DataTimeout:           wait,
		},
	}
}

// mtas starts smtptest back-ends named b1, b2… and returns them with
// their addresses; they stop when the test ends.
func mtas(t testing.TB, n int, opt func(*smtptest.Server)) ([]*smtptest.Server, []string) {
	t.Helper()
	var servers []*smtptest.Server
	var addrs []string
	for i := range n {
		s := smtptest.NewUnstartedServer(fmt.Sprintf("b%d", i+1))
		if opt != nil {
			opt(s)
		}
		s.Start()
		t.Cleanup(s.Close)
		servers = append(servers, s)
		addrs = append(addrs, s.Addr)
	}
	return servers, addrs
}

// serve runs fe behind a proxy.Server on 127.0.0.1:0 and returns its
// address. When the test ends the server is closed and every session
// must have returned.
func serve(t testing.TB, fe *Frontend) (string, *proxy.Server) {
	t.Helper()
	return serveWith(t, &proxy.Server{Name: "smtp-test", Handler: fe, Log: quiet})
}

func serveWith(t testing.TB, srv *proxy.Server) (string, *proxy.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("sessions still running after Close: %v", err)
		}
		if err := <-done; !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ln.Addr().String(), srv
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// tarpit accepts connections on 127.0.0.2 and never says a word, as a
// hung back-end does.
func tarpit(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.2: %v", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// client is the test's side of an SMTP conversation over loopback.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

// dial connects to addr from 127.0.0.1.
func dial(t testing.TB, addr string) *client { return dialFrom(t, "127.0.0.1", addr) }

// dialFrom connects to addr from the loopback address src.
func dialFrom(t testing.TB, src, addr string) *client {
	t.Helper()
	d := net.Dialer{Timeout: wait, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(wait))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

// greeted dials addr and reads gatehouse's greeting.
func greeted(t testing.TB, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.expect("220 gate.test ESMTP")
	return c
}

// send writes each line with CRLF, all in one write.
func (c *client) send(lines ...string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, strings.Join(lines, "\r\n")+"\r\n"); err != nil {
		c.t.Fatalf("send %q: %v", lines, err)
	}
}

// reply reads one whole reply and returns its lines joined by "\n".
func (c *client) reply() (string, error) {
	var lines []string
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return strings.Join(lines, "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n"), nil
		}
	}
}

// expect reads one reply whose last line must begin with want.
func (c *client) expect(want string) string {
	c.t.Helper()
	r, err := c.reply()
	if err != nil {
		c.t.Fatalf("reading the reply expected to begin %q: %v (got %q)", want, err, r)
	}
	last := r[strings.LastIndex(r, "\n")+1:]
	if !strings.HasPrefix(last, want) {
		c.t.Fatalf("got reply %q, want one beginning %q", r, want)
	}
	return r
}

// cmd sends one command and expects its reply.
func (c *client) cmd(line, want string) string {
	c.t.Helper()
	c.send(line)
	return c.expect(want)
}

// data sends DATA, the message (dot-stuffed by the caller) and the end of
// data, and expects the final reply.
func (c *client) data(body, want string) string {
	c.t.Helper()
	c.cmd("DATA", "354 ")
	if _, err := io.WriteString(c.c, body+"\r\n.\r\n"); err != nil {
		c.t.Fatalf("send message: %v", err)
	}
	return c.expect(want)
}

// mail runs one whole transaction and expects the reply to its data.
func (c *client) mail(from, to, body, want string) string {
	c.t.Helper()
	c.cmd("MAIL FROM:<"+from+">", "250 ")
	c.cmd("RCPT TO:<"+to+">", "250 ")
	return c.data(body, want)
}

// startTLS upgrades the conversation, verifying gatehouse's certificate.
func (c *client) startTLS() {
	c.t.Helper()
	c.cmd("STARTTLS", "220 2.0.0 ")
	c.handshake()
}

func (c *client) handshake() {
	c.t.Helper()
	tc := stdtls.Client(c.c, testClientTLS())
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.c, c.br = tc, bufio.NewReader(tc)
}

// expectClosed reads until the connection ends; nothing may arrive.
func (c *client) expectClosed() {
	c.t.Helper()
	data, err := io.ReadAll(c.br)
	if len(data) > 0 {
		c.t.Errorf("read %q before the close", data)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.t.Fatalf("connection still open after %v", wait)
	}
}

// silent checks that nothing arrives within d.
func (c *client) silent(d time.Duration) {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(d))
	defer c.c.SetReadDeadline(time.Now().Add(wait))
	if b, err := c.br.ReadByte(); err == nil {
		rest, _ := c.br.Peek(c.br.Buffered())
		c.t.Fatalf("got %q, want silence", append([]byte{b}, rest...))
	}
}

var (
	certOnce sync.Once
	testCert stdtls.Certificate
	testPool *x509.CertPool
)

// testCertificate is a self-signed certificate for localhost and
// 127.0.0.1, made once per test binary.
func testCertificate() (stdtls.Certificate, *x509.CertPool) {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "gate.test"},
			DNSNames:     []string{"localhost", "gate.test"},
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
		leaf, _ := x509.ParseCertificate(der)
		testCert = stdtls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		testPool = x509.NewCertPool()
		testPool.AddCert(leaf)
	})
	return testCert, testPool
}

// testServerTLS is the edge (and back-end) server config of the tests.
func testServerTLS() *stdtls.Config {
	cert, _ := testCertificate()
	return &stdtls.Config{Certificates: []stdtls.Certificate{cert}, MinVersion: stdtls.VersionTLS12}
}

// testClientTLS trusts testCertificate as gate.test.
func testClientTLS() *stdtls.Config {
	_, pool := testCertificate()
	return &stdtls.Config{RootCAs: pool, ServerName: "gate.test"}
}

// logBuffer collects log lines for tests that read them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the logged lines containing msg.
func (b *logBuffer) lines(msg string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, msg) {
			out = append(out, l)
		}
	}
	return out
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// eventually polls cond until it holds or d has passed.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
