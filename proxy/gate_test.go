//go:build linux

package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// withHeader connects from 127.0.0.1 (the trusted load balancer) and
// sends a v2 PROXY header naming src as the client.
func withHeader(t *testing.T, addr, src string) *client {
	t.Helper()
	c := connect(t, addr)
	dst := &net.TCPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 110}
	raw, err := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP(src), Port: 40000}, dst).Format()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.conn.Write(raw); err != nil {
		t.Fatal(err)
	}
	return c
}

// max_per_ip counts the client a trusted load balancer names, not the
// balancer: three clients behind one balancer with MaxPerIP 2 are all
// served, and the third connection of one of them is refused.
func TestMaxPerIPCountsProxiedClients(t *testing.T) {
	a := startEcho(t, "a")
	h := &refusingTCP{TCP: &TCP{Pool: dialPool("perip-lb", time.Second, NewBackend("a", a.Addr(), 1)), Link: Link{Log: quiet}}, refused: make(chan string, 4)}
	srv := &Server{Name: "perip-lb", Handler: h, MaxPerIP: 2, Log: quiet, Trusted: trustedLoopback}
	addr := startProxy(t, srv)
	for i, src := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.1"} {
		if got := withHeader(t, addr, src).banner(t); got != "a" {
			t.Fatalf("client %d (%s) behind the balancer: banner %q, want a", i+1, src, got)
		}
	}
	third := withHeader(t, addr, "192.0.2.1")
	if line, err := third.readLine(); err != nil || !strings.HasPrefix(line, "421 ") {
		t.Fatalf("third connection of 192.0.2.1 read %q, %v; want the 421 refusal", line, err)
	}
	if reason := <-h.refused; reason != "per_ip_limit" {
		t.Errorf("refusal reason %q", reason)
	}
}

// A reload hands the socket to a new Server with the same Gate: the old
// Server's live sessions still count against MaxPerIP and MaxConns.
func TestGateSpansServers(t *testing.T) {
	a := startEcho(t, "a")
	gate := NewGate()
	newServer := func() *Server {
		return &Server{Name: "gate", Handler: &TCP{Pool: dialPool("gate", time.Second, NewBackend("a", a.Addr(), 1)), Link: Link{Log: quiet}},
			Log: quiet, MaxPerIP: 2, MaxConns: 3, Gate: gate}
	}
	ln := listen(t, "127.0.0.1")
	addr := ln.Addr().String()
	old := newServer()
	go old.Serve(ln)
	t.Cleanup(func() { old.Close() })
	for range 2 {
		connect(t, addr).banner(t)
	}
	if err := old.Release(ln); err != nil {
		t.Fatal(err)
	}
	cur := newServer()
	served := make(chan error, 1)
	go func() { served <- cur.Serve(ln) }()
	t.Cleanup(func() {
		cur.Close()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
	})

	third := connect(t, addr) // 127.0.0.1's third: refused by the new Server
	third.expectClosed(t)
	other := connectFrom(t, "127.0.0.2", addr)
	if got := other.banner(t); got != "a" {
		t.Fatalf("another address: banner %q", got)
	}
	queued := connectFrom(t, "127.0.0.3", addr) // the fourth session: MaxConns 3 holds it in the backlog
	queued.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if line, err := queued.r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("fourth session read %q, %v; want to wait", line, err)
	}
	old.Close() // the old sessions end: their slots free
	if got := queued.banner(t); got != "a" {
		t.Errorf("queued client got %q once the old sessions ended", got)
	}
	if !eventually(wait, func() bool { return gate.PerIP(netip127) == 0 }) {
		t.Errorf("gate still counts %d sessions of 127.0.0.1 after they ended", gate.PerIP(netip127))
	}
}

// Past the descriptor budget a connection is closed at once, counted as
// fd_reserve; the sessions within it go on, and the room comes back.
func TestFDBudgetRefusesExcess(t *testing.T) {
	a := startEcho(t, "a")
	srv := tcpProxy("fdbudget", dialPool("fdbudget", time.Second, NewBackend("a", a.Addr(), 1)))
	srv.FDs = NewFDBudget(2 * SessionFDs)
	addr := startProxy(t, srv)
	before := testutil.ToFloat64(refusedTotal.WithLabelValues("fdbudget", "fd_reserve"))
	first := connect(t, addr)
	first.banner(t)
	connect(t, addr).banner(t)
	excess := connect(t, addr)
	excess.conn.SetReadDeadline(time.Now().Add(wait))
	if n, err := excess.r.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("excess connection read %d bytes, %v; want EOF at once", n, err)
	}
	if got := testutil.ToFloat64(refusedTotal.WithLabelValues("fdbudget", "fd_reserve")) - before; got != 1 {
		t.Errorf("fd_reserve refusals rose by %v, want 1", got)
	}
	first.mustEcho(t, "still served")
	first.conn.Close()
	if !eventually(wait, func() bool { return srv.FDs.InUse() == SessionFDs }) {
		t.Fatalf("budget in use %d after a session ended", srv.FDs.InUse())
	}
	if got := connect(t, addr).banner(t); got != "a" {
		t.Errorf("after room came back: banner %q", got)
	}
}

func TestFDReserveFormula(t *testing.T) {
	for limit, want := range map[int]int{256: 64, 1024: 64, 1280: 64, 4096: 204, 1 << 20: 52428} {
		if got := FDReserve(limit); got != want {
			t.Errorf("FDReserve(%d) = %d, want %d", limit, got, want)
		}
	}
}

// handOffThenPanic hands its session off and then panics, before it set
// up whatever would have ended the session.
type handOffThenPanic struct{}

func (handOffThenPanic) ServeConn(_ context.Context, conn net.Conn) {
	conn.(*ClientConn).HandOff()
	panic("bug after hand-off")
}

// A panic after HandOff ends the session: Shutdown does not wait out its
// grace for a session nothing will ever end.
func TestPanicAfterHandOffEndsSession(t *testing.T) {
	srv := &Server{Name: "panic-handoff", Handler: handOffThenPanic{}, Log: quiet}
	addr := startProxy(t, srv)
	c := connect(t, addr)
	c.expectClosed(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown = %v: the panicked session stayed counted", err)
	}
}

// A session ended twice (the Server after a panic, then the part it was
// handed to) runs its cleanup once.
func TestEndRunsOnce(t *testing.T) {
	n := 0
	c := &ClientConn{}
	c.atEnd(func() { n++ })
	c.end()
	c.end()
	if n != 1 {
		t.Errorf("cleanup ran %d times", n)
	}
}

var trustedLoopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

var netip127 = netip.MustParseAddr("127.0.0.1")

func TestLogLimit(t *testing.T) {
	l := LogLimiter{Interval: refusalLogInterval}
	now := time.Unix(0, 0)
	for i := range 5 {
		if ok, _ := l.allow("fd_reserve", "", now.Add(time.Duration(i)*time.Second)); ok != (i == 0) {
			t.Fatalf("line %d allowed=%v", i, ok)
		}
	}
	if ok, held := l.allow("fd_reserve", "", now.Add(refusalLogInterval)); !ok || held != 4 {
		t.Errorf("after the interval: allowed=%v held=%d, want true 4", ok, held)
	}
	if ok, _ := l.allow("per_ip_limit", "", now.Add(refusalLogInterval)); !ok {
		t.Error("another reason was held back")
	}
}

// Dials that fail for a local reason (out of descriptors) never take a
// back-end out passively: they say nothing about it.
func TestLocalDialErrorsDoNotMarkDown(t *testing.T) {
	b := NewBackend("a", "192.0.2.1:25", 1)
	down := false
	p := &Pool{Name: "local-err", Backends: []*Backend{b}, PassiveFailures: 2, OnPassiveDown: func(*Backend) { down = true },
		Dialer: func(context.Context, string, string) (net.Conn, error) {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
		}}
	for range 5 {
		if _, _, err := p.Dial(t.Context(), ""); !errors.Is(err, syscall.EMFILE) {
			t.Fatalf("Dial = %v, want the EMFILE", err)
		}
	}
	if down || !b.Healthy() {
		t.Error("local dial failures took the back-end down")
	}
}
