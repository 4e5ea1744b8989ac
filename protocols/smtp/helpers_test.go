package smtp

import (
	"context"
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
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// wait bounds every read, write and dial a test makes, so that a broken
// frontend fails a test instead of hanging it.
const wait = wiretest.Wait

// quiet is the logger of servers whose log lines a test does not read.
var quiet = slog.New(slog.DiscardHandler)

// TestMain fails the package when goroutines outlive the tests: every
// session, back-end and watcher a test starts must have ended.
func TestMain(m *testing.M) { wiretest.Main(m) }

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
		Pool: pool,

		Config: Config{
			Hostname:              "gate.test",
			BackendSetupTimeout:   time.Second,
			BackendCommandTimeout: wait,
			BackendDataTimeout:    wait,
			CommandTimeout:        wait,
			DataTimeout:           wait,
		}, Link: proxy.Link{

			// mtas starts smtptest back-ends named b1, b2… and returns them with
			// their addresses; they stop when the test ends.
			Log: quiet, Throttle: &proxy.Throttle{Delay: time.Millisecond}},
	}
}

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
type client struct{ *wiretest.Conn }

// dial connects to addr from 127.0.0.1.
func dial(t testing.TB, addr string) *client { return dialFrom(t, "127.0.0.1", addr) }

// dialFrom connects to addr from the loopback address src.
func dialFrom(t testing.TB, src, addr string) *client {
	t.Helper()
	return &client{wiretest.DialFrom(t, src, addr)}
}

// greeted dials addr and reads gatehouse's greeting.
func greeted(t testing.TB, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.expect("220 gate.test ESMTP")
	return c
}

// expect reads one reply whose last line must begin with want, and
// returns its lines joined by "\n".
func (c *client) expect(want string) string {
	c.T.Helper()
	lines := c.Reply()
	r := strings.Join(lines, "\n")
	if !strings.HasPrefix(lines[len(lines)-1], want) {
		c.T.Fatalf("got reply %q, want one beginning %q", r, want)
	}
	return r
}

// cmd sends one command and expects its reply.
func (c *client) cmd(line, want string) string {
	c.T.Helper()
	c.Send(line)
	return c.expect(want)
}

// data sends DATA, the message (dot-stuffed by the caller) and the end of
// data, and expects the final reply.
func (c *client) data(body, want string) string {
	c.T.Helper()
	c.cmd("DATA", "354 ")
	if _, err := io.WriteString(c, body+"\r\n.\r\n"); err != nil {
		c.T.Fatalf("send message: %v", err)
	}
	return c.expect(want)
}

// mail runs one whole transaction and expects the reply to its data.
func (c *client) mail(from, to, body, want string) string {
	c.T.Helper()
	c.cmd("MAIL FROM:<"+from+">", "250 ")
	c.cmd("RCPT TO:<"+to+">", "250 ")
	return c.data(body, want)
}

// startTLS upgrades the conversation, verifying gatehouse's certificate.
func (c *client) startTLS() {
	c.T.Helper()
	c.cmd("STARTTLS", "220 2.0.0 ")
	c.StartTLS(wiretest.ClientTLS())
}

// expectClosed reads until the connection ends; nothing may arrive.
func (c *client) expectClosed() {
	c.T.Helper()
	data, err := io.ReadAll(c.R)
	if len(data) > 0 {
		c.T.Errorf("read %q before the close", data)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.T.Fatalf("connection still open after %v", wait)
	}
}

// silent checks that nothing arrives within d.
func (c *client) silent(d time.Duration) {
	c.T.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Now().Add(wait))
	if b, err := c.R.ReadByte(); err == nil {
		rest, _ := c.R.Peek(c.R.Buffered())
		c.T.Fatalf("got %q, want silence", append([]byte{b}, rest...))
	}
}
