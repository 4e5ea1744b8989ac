//go:build linux

package proxy

import (
	"bufio"
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"

	"github.com/pires/go-proxyproto"
)

// wait bounds every read, write and dial a test makes, so that a broken
// proxy fails a test instead of hanging it.
const wait = 5 * time.Second

// quiet is the logger of servers whose log lines a test does not read.
var quiet = slog.New(slog.DiscardHandler)

// TestMain fails the package when goroutines outlive the tests: every
// session, pump and back-end a test starts must have ended.
func TestMain(m *testing.M) { wiretest.Main(m) }

// listen opens a listener on ip with a port the kernel picks, closed when
// the test ends.
func listen(t testing.TB, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// tcpPair returns the two ends of one loopback TCP connection.
func tcpPair(t testing.TB) (near, far *net.TCPConn) {
	t.Helper()
	ln := listen(t, "127.0.0.1")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), wait)
	if err != nil {
		t.Fatalf("dial %s: %v", ln.Addr(), err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// echoServer is a back-end that greets each client with its name on a line
// of its own, as a mail server greets with its banner, then echoes every
// byte back. kill stops it the way a crashed host would: the listener and
// every live connection close at once.
type echoServer struct {
	name       string
	proxyAware bool
	ln         net.Listener
	wg         sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	killed bool
}

// startEcho starts an echo back-end on 127.0.0.1, killed when the test ends.
func startEcho(t testing.TB, name string) *echoServer {
	t.Helper()
	return runEcho(t, &echoServer{name: name})
}

// startProxyAware starts an echo back-end that requires a PROXY header, as
// Postfix's postscreen or Dovecot with haproxy_trusted_networks does, and
// greets with its name, the header's version and the client it names:
// "name v2 192.0.2.10:40000".
func startProxyAware(t testing.TB, name string) *echoServer {
	t.Helper()
	return runEcho(t, &echoServer{name: name, proxyAware: true})
}

// restartEcho starts an echo back-end again on the address of one that
// was killed, as a host that comes back after a reboot.
func restartEcho(t testing.TB, dead *echoServer) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", dead.Addr())
	if err != nil {
		t.Fatalf("listen again on %s: %v", dead.Addr(), err)
	}
	t.Cleanup(func() { ln.Close() })
	return runEcho(t, &echoServer{name: dead.name, proxyAware: dead.proxyAware, ln: ln})
}

func runEcho(t testing.TB, e *echoServer) *echoServer {
	if e.ln == nil {
		e.ln = listen(t, "127.0.0.1")
	}
	e.conns = make(map[net.Conn]struct{})
	e.wg.Add(1)
	go e.acceptLoop()
	t.Cleanup(e.kill)
	return e
}

// Addr returns the address a Backend dials.
func (e *echoServer) Addr() string { return e.ln.Addr().String() }

func (e *echoServer) acceptLoop() {
	defer e.wg.Done()
	for {
		c, err := e.ln.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		if e.killed {
			e.mu.Unlock()
			c.Close()
			continue
		}
		e.conns[c] = struct{}{}
		e.wg.Add(1)
		e.mu.Unlock()
		go e.serve(c)
	}
}

func (e *echoServer) serve(c net.Conn) {
	defer e.wg.Done()
	defer func() {
		e.mu.Lock()
		delete(e.conns, c)
		e.mu.Unlock()
		c.Close()
	}()
	c.SetReadDeadline(time.Now().Add(wait))
	r := bufio.NewReader(c)
	greeting := e.name
	if e.proxyAware {
		h, err := proxyproto.Read(r)
		if err != nil {
			fmt.Fprintf(c, "%s refuses: %v\n", e.name, err)
			return
		}
		greeting = fmt.Sprintf("%s v%d %s", e.name, h.Version, h.SourceAddr)
	}
	c.SetReadDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "%s\n", greeting); err != nil {
		return
	}
	io.Copy(c, r)
}

// kill closes the listener and every live connection, and waits for the
// server's goroutines to end. Every connection is shut down first, in one
// sweep: Close waits for its blocked reader to run, which on a loaded
// machine would spread the death over a long time.
func (e *echoServer) kill() {
	e.mu.Lock()
	e.killed = true
	e.ln.Close()
	for c := range e.conns {
		c.(*net.TCPConn).CloseRead()
		c.(*net.TCPConn).CloseWrite()
	}
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// serveProxy serves s on a fresh 127.0.0.1 listener and returns its
// address and a function that waits for Serve's result. When the test ends
// it closes s, waits for every session to return, and checks that Serve
// returned ErrServerClosed.
func serveProxy(t testing.TB, s *Server) (addr string, served func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	result := make(chan error, 1)
	go func() { result <- s.Serve(ln) }()
	served = sync.OnceValue(func() error {
		select {
		case err := <-result:
			return err
		case <-time.After(wait):
			return fmt.Errorf("Serve still running after %v", wait)
		}
	})
	t.Cleanup(func() {
		s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("sessions still running after Close: %v", err)
		}
		if err := served(); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String(), served
}

// startProxy is serveProxy for tests that do not look at Serve's result.
func startProxy(t testing.TB, s *Server) string {
	t.Helper()
	addr, _ := serveProxy(t, s)
	return addr
}

// tcpProxy returns a Server running the layer-4 frontend over pool.
func tcpProxy(name string, pool *Pool) *Server {
	return &Server{Name: name, Handler: &TCP{Pool: pool, Link: Link{Log: quiet}}, Log: quiet}
}

// client is one test client: a loopback connection and a line reader.
type client struct {
	conn *net.TCPConn
	r    *bufio.Reader
}

// dialFrom connects to addr from the source address src.
func dialFrom(src, addr string) (*client, error) {
	d := net.Dialer{Timeout: wait, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &client{conn: c.(*net.TCPConn), r: bufio.NewReader(c)}, nil
}

// connect opens a client from 127.0.0.1, closed when the test ends.
func connect(t testing.TB, addr string) *client {
	t.Helper()
	return connectFrom(t, "127.0.0.1", addr)
}

// connectFrom opens a client from src, closed when the test ends.
func connectFrom(t testing.TB, src, addr string) *client {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		t.Fatalf("connect to %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { c.conn.Close() })
	return c
}

// readLine returns the next line without its newline.
func (c *client) readLine() (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(wait))
	line, err := c.r.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

// echo sends msg and checks that the same line comes back.
func (c *client) echo(msg string) error {
	c.conn.SetWriteDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c.conn, msg+"\n"); err != nil {
		return fmt.Errorf("send %q: %w", msg, err)
	}
	got, err := c.readLine()
	if err != nil {
		return fmt.Errorf("echo of %q: %w", msg, err)
	}
	if got != msg {
		return fmt.Errorf("echo of %q came back as %q", msg, got)
	}
	return nil
}

// banner reads the back-end's greeting line: its name.
func (c *client) banner(t testing.TB) string {
	t.Helper()
	name, err := c.readLine()
	if err != nil {
		t.Fatalf("no banner: %v", err)
	}
	return name
}

// mustEcho is echo for the test goroutine.
func (c *client) mustEcho(t testing.TB, msg string) {
	t.Helper()
	if err := c.echo(msg); err != nil {
		t.Fatal(err)
	}
}

// expectClosed checks that the proxy closes the connection: a read ends
// with EOF or a reset, not with data and not with the deadline.
func (c *client) expectClosed(t testing.TB) {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(wait))
	data, err := io.ReadAll(c.r)
	if len(data) > 0 {
		t.Errorf("read %q before the close", data)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open after %v", wait)
	}
}

// fixedOrder is a Policy that keeps the pool's config order, so a test
// decides which back-end is dialed first.
type fixedOrder struct{}

func (fixedOrder) Order(_ string, usable []*Backend) []*Backend { return usable }

// names returns the back-ends' names in order.
func names(bs []*Backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Name
	}
	return out
}

// eventually polls cond every 5ms until it holds or d passes.
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

// tlsPair returns the two ends of one loopback TLS connection, handshake
// done: near is the client side, far the server side.
func tlsPair(t testing.TB) (near, far *stdtls.Conn) {
	t.Helper()
	c, s := tcpPair(t)
	near = stdtls.Client(c, &stdtls.Config{InsecureSkipVerify: true})
	far = stdtls.Server(s, &stdtls.Config{Certificates: []stdtls.Certificate{wiretest.Certificate()}})
	errs := make(chan error, 1)
	go func() { errs <- far.Handshake() }()
	near.SetDeadline(time.Now().Add(wait))
	if err := near.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("TLS handshake (server): %v", err)
	}
	near.SetDeadline(time.Time{})
	return near, far
}
