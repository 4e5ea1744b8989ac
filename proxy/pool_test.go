//go:build linux

package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

// refusedAddr returns an address on 127.0.0.2 where nothing listens any
// more: a dial there is refused at once.
func refusedAddr(t testing.TB) string {
	t.Helper()
	ln := listen(t, "127.0.0.2")
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// tarpit returns an address on 127.0.0.2 that never answers a SYN: a
// listening socket with a backlog of 0 whose one queue slot is taken by a
// connection nobody accepts, so the kernel drops every further SYN and a
// dial there waits for its timeout, as with a host that vanished.
func tarpit(t testing.TB) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 2}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatalf("listen: %v", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.2", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
	filler, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatalf("filling the tarpit's queue: %v", err)
	}
	t.Cleanup(func() { filler.Close() })
	return addr
}

// dialPool returns a pool that dials its back-ends in the given order.
func dialPool(name string, timeout time.Duration, bs ...*Backend) *Pool {
	return &Pool{Name: name, Backends: bs, Policy: fixedOrder{}, ConnectTimeout: timeout}
}

// dialAndGreet dials through p and reads the back-end's banner.
func dialAndGreet(t testing.TB, p *Pool) (*Backend, time.Duration) {
	t.Helper()
	start := time.Now()
	conn, b, err := p.Dial(t.Context(), "")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	c := &client{conn: conn.(*net.TCPConn), r: bufio.NewReader(conn)}
	if got := c.banner(t); got != b.Name {
		t.Fatalf("Dial says %s but %s answered", b.Name, got)
	}
	return b, took
}

// A back-end host that vanished (SYNs unanswered) costs one connect
// timeout, then the next back-end takes the session.
func TestDialFailsOverFromTarpit(t *testing.T) {
	const timeout = 300 * time.Millisecond
	live := startEcho(t, "live")
	p := dialPool("tarpit", timeout, NewBackend("pit", tarpit(t), 1), NewBackend("live", live.Addr(), 1))
	before := testutil.ToFloat64(failovers.WithLabelValues("tarpit", "live"))

	b, took := dialAndGreet(t, p)
	if b.Name != "live" {
		t.Fatalf("session went to %s, want live", b.Name)
	}
	if took < timeout*3/4 || took > timeout+2*time.Second {
		t.Errorf("failover took %v, want about the connect timeout %v", took, timeout)
	}
	if got := testutil.ToFloat64(failovers.WithLabelValues("tarpit", "live")) - before; got != 1 {
		t.Errorf("failover metric rose by %v, want 1", got)
	}
}

// A refused connection (host up, service down) fails over at once.
func TestDialFailsOverFromRefused(t *testing.T) {
	live := startEcho(t, "live")
	p := dialPool("refused", 3*time.Second, NewBackend("down", refusedAddr(t), 1), NewBackend("live", live.Addr(), 1))
	b, took := dialAndGreet(t, p)
	if b.Name != "live" {
		t.Fatalf("session went to %s, want live", b.Name)
	}
	if took > time.Second {
		t.Errorf("failover from a refused port took %v, want no wait", took)
	}
}

// Three refused dials in a row take a back-end out (passive health) and
// tell the monitor once; it stays out of Pick until a health check sees it
// answer again.
func TestPassiveOutageEndsWithHealthyVerdict(t *testing.T) {
	live := startEcho(t, "live")
	down := NewBackend("down", refusedAddr(t), 1)
	p := dialPool("passive", time.Second, down, NewBackend("live", live.Addr(), 1))
	var reported atomic.Int32
	p.OnPassiveDown = func(b *Backend) {
		if b != down {
			t.Errorf("OnPassiveDown(%s), want down", b.Name)
		}
		reported.Add(1)
	}
	for i := range 3 {
		if got := names(p.Pick("")); len(got) != 2 {
			t.Fatalf("before failure %d: Pick = %v, want both", i+1, got)
		}
		dialAndGreet(t, p)
	}
	if down.Healthy() || reported.Load() != 1 {
		t.Fatalf("after 3 failures: healthy %v, reported %d times; want out and reported once", down.Healthy(), reported.Load())
	}
	for range 3 {
		if got := names(p.Pick("")); len(got) != 1 || got[0] != "live" {
			t.Fatalf("during the outage Pick = %v, want only live", got)
		}
		dialAndGreet(t, p)
	}
	if reported.Load() != 1 {
		t.Errorf("OnPassiveDown called %d times, want once per outage", reported.Load())
	}

	down.SetHealthy(true)
	if got := names(p.Pick("")); len(got) != 2 || got[0] != "down" {
		t.Errorf("after a healthy verdict Pick = %v, want down back first", got)
	}
}

// With passive health disabled, failures never take a back-end out.
func TestPassiveHealthDisabled(t *testing.T) {
	live := startEcho(t, "live")
	down := NewBackend("down", refusedAddr(t), 1)
	p := dialPool("nopassive", time.Second, down, NewBackend("live", live.Addr(), 1))
	p.PassiveFailures = -1
	for range 5 {
		dialAndGreet(t, p)
	}
	if !down.Healthy() {
		t.Error("back-end taken out though passive health is disabled")
	}
}

// When no back-end answers, Dial says so with ErrNoBackend and the cause.
func TestDialNoBackend(t *testing.T) {
	p := dialPool("none", time.Second, NewBackend("x", refusedAddr(t), 1), NewBackend("y", refusedAddr(t), 1))
	_, _, err := p.Dial(t.Context(), "")
	var op *net.OpError
	if !errors.Is(err, ErrNoBackend) || !errors.As(err, &op) {
		t.Errorf("Dial = %v, want ErrNoBackend wrapping the dial error", err)
	}
	for _, b := range p.Backends {
		b.SetAdmin(Disabled)
	}
	if _, _, err := p.Dial(t.Context(), ""); !errors.Is(err, ErrNoBackend) {
		t.Errorf("Dial with every back-end disabled = %v, want ErrNoBackend", err)
	}
}

// A cancelled context stops the failover walk instead of waiting out a
// connect timeout per back-end.
func TestDialStopsOnCancel(t *testing.T) {
	p := dialPool("cancel", 10*time.Second, NewBackend("p1", tarpit(t), 1), NewBackend("p2", tarpit(t), 1))
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := p.Dial(ctx, ""); !errors.Is(err, ErrNoBackend) {
		t.Errorf("Dial = %v, want ErrNoBackend", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Dial took %v after its context ended", took)
	}
}
