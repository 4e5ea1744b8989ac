//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// refusingTCP is the layer-4 frontend with a protocol-level refusal, as a
// mail frontend has: an SMTP 421 before the connection closes.
type refusingTCP struct {
	*TCP
	refused chan string
}

func (h *refusingTCP) Refuse(conn net.Conn, reason string) {
	io.WriteString(conn, "421 4.7.0 Too many connections from your address\r\n")
	h.refused <- reason
}

// The fourth connection from one address is refused at once, in the
// protocol, while other addresses and the first three go on; when one of
// the three ends, its slot is free again.
func TestMaxPerIP(t *testing.T) {
	a := startEcho(t, "a")
	h := &refusingTCP{TCP: &TCP{Pool: dialPool("perip", time.Second, NewBackend("a", a.Addr(), 1)), Link: Link{Log: quiet}}, refused: make(chan string, 4)}
	srv := &Server{Name: "perip", Handler: h, MaxPerIP: 3, Log: quiet}
	addr := startProxy(t, srv)
	before := testutil.ToFloat64(refusedTotal.WithLabelValues("perip", "per_ip_limit"))

	var first []*client
	for range 3 {
		c := connect(t, addr)
		if got := c.banner(t); got != "a" {
			t.Fatalf("banner %q, want a", got)
		}
		first = append(first, c)
	}

	fourth := connect(t, addr)
	if line, err := fourth.readLine(); err != nil || !strings.HasPrefix(line, "421 ") {
		t.Fatalf("fourth connection read %q, %v; want the 421 refusal", line, err)
	}
	fourth.expectClosed(t)
	if reason := <-h.refused; reason != "per_ip_limit" {
		t.Errorf("Refuse reason %q, want per_ip_limit", reason)
	}
	if got := testutil.ToFloat64(refusedTotal.WithLabelValues("perip", "per_ip_limit")) - before; got != 1 {
		t.Errorf("refusal metric rose by %v, want 1", got)
	}

	other := connectFrom(t, "127.0.0.2", addr)
	if got := other.banner(t); got != "a" {
		t.Errorf("client from 127.0.0.2: banner %q, want a", got)
	}
	for i, c := range first {
		c.mustEcho(t, "NOOP "+string(rune('1'+i)))
	}

	first[0].conn.Close()
	if !eventually(wait, func() bool { return srv.Active() == 3 }) {
		t.Fatalf("%d sessions active after one ended, want 3", srv.Active())
	}
	again := connect(t, addr)
	if got := again.banner(t); got != "a" {
		t.Errorf("after a slot freed: banner %q, want a", got)
	}
}

// watching passes the session's ShuttingDown channel to the test, then
// serves the session with next.
type watching struct {
	next     Handler
	shutdown chan (<-chan struct{})
}

func (h *watching) ServeConn(ctx context.Context, conn net.Conn) {
	h.shutdown <- ShuttingDown(ctx)
	h.next.ServeConn(ctx, conn)
}

// Shutdown stops accepting at once, tells live sessions, and waits for
// them: the live client keeps being served until it leaves.
func TestShutdownWaitsForLiveSession(t *testing.T) {
	a := startEcho(t, "a")
	h := &watching{next: &TCP{Pool: dialPool("drain-wait", time.Second, NewBackend("a", a.Addr(), 1)), Link: Link{Log: quiet}}, shutdown: make(chan (<-chan struct{}), 1)}
	srv := &Server{Name: "drain-wait", Handler: h, Log: quiet}
	addr, served := serveProxy(t, srv)

	c := connect(t, addr)
	c.banner(t)
	goingDown := <-h.shutdown
	select {
	case <-goingDown:
		t.Fatal("ShuttingDown ready before Shutdown")
	default:
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	select {
	case <-goingDown:
	case <-time.After(wait):
		t.Fatal("ShuttingDown not ready after Shutdown began")
	}
	if err := served(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve returned %v, want ErrServerClosed", err)
	}
	if late, err := dialFrom("127.0.0.1", addr); err == nil {
		late.conn.Close()
		t.Error("a new connection was accepted during shutdown")
	}

	c.mustEcho(t, "NOOP")
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a session was live", err)
	case <-time.After(200 * time.Millisecond):
	}
	c.mustEcho(t, "QUIT")
	c.conn.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil once the session ended", err)
		}
	case <-time.After(wait):
		t.Fatal("Shutdown still waiting after the last session ended")
	}
}

// When the grace period ends first, Shutdown closes what is left.
func TestShutdownDeadlineClosesSessions(t *testing.T) {
	a := startEcho(t, "a")
	srv := tcpProxy("drain-deadline", dialPool("drain-deadline", time.Second, NewBackend("a", a.Addr(), 1)))
	addr := startProxy(t, srv)
	c := connect(t, addr)
	c.banner(t)

	const grace = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), grace)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took < grace*3/4 || took > grace+2*time.Second {
		t.Errorf("Shutdown took %v, want about the grace of %v", took, grace)
	}
	c.expectClosed(t)
	if n := srv.Active(); n != 0 {
		t.Errorf("%d sessions active after Shutdown, want 0", n)
	}
}

// A Server that was shut down refuses to serve again.
func TestServeAfterShutdown(t *testing.T) {
	srv := tcpProxy("reuse", &Pool{Name: "reuse"})
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	ln := listen(t, "127.0.0.1")
	if err := srv.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v, want ErrServerClosed", err)
	}
	if ShuttingDown(t.Context()) != nil {
		t.Error("ShuttingDown of a context of no Server is not nil")
	}
}

// A draining back-end takes no new session but keeps its live one; closing
// its sessions (as disabling does) ends that one and nothing else.
func TestDrainThenCloseSessions(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	ba, bb := NewBackend("a", a.Addr(), 1), NewBackend("b", b.Addr(), 1)
	addr := startProxy(t, tcpProxy("drain", dialPool("drain", time.Second, ba, bb)))

	onA := connect(t, addr)
	if got := onA.banner(t); got != "a" {
		t.Fatalf("first session on %s, want a", got)
	}
	ba.SetAdmin(Draining)
	for range 3 {
		if got := connect(t, addr).banner(t); got != "b" {
			t.Fatalf("new session on %s while a drains, want b", got)
		}
	}
	onA.mustEcho(t, "still here")
	if n := ba.Active(); n != 1 {
		t.Errorf("a has %d live sessions, want 1", n)
	}

	onB := connect(t, addr)
	onB.banner(t)
	ba.SetAdmin(Disabled)
	if n := ba.CloseSessions(); n != 1 {
		t.Errorf("CloseSessions closed %d, want 1", n)
	}
	onA.expectClosed(t)
	if !eventually(wait, func() bool { return ba.Active() == 0 }) {
		t.Errorf("a still has %d live sessions", ba.Active())
	}
	onB.mustEcho(t, "unaffected")
}

// panicky echoes lines, and panics on the line "panic": a frontend bug.
type panicky struct{}

func (panicky) ServeConn(_ context.Context, conn net.Conn) {
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if line == "panic\n" {
			panic("frontend bug")
		}
		io.WriteString(conn, line)
	}
}

// lockedBuffer is a log destination safe for concurrent sessions.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A panicking session ends alone, with its stack logged: the process and
// every other session go on.
func TestPanickingHandler(t *testing.T) {
	var logs lockedBuffer
	srv := &Server{Name: "panic", Handler: panicky{}, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	addr := startProxy(t, srv)
	bystander := connect(t, addr)
	bystander.mustEcho(t, "hello")

	victim := connect(t, addr)
	victim.mustEcho(t, "hello")
	io.WriteString(victim.conn, "panic\n")
	victim.expectClosed(t)

	bystander.mustEcho(t, "still served")
	connect(t, addr).mustEcho(t, "new session")
	if !eventually(wait, func() bool { return strings.Contains(logs.String(), "session panicked") }) {
		t.Fatalf("no panic logged; log:\n%s", logs.String())
	}
	if l := logs.String(); !strings.Contains(l, "frontend bug") || !strings.Contains(l, "panicky.ServeConn") {
		t.Errorf("panic log lacks the value or the stack:\n%s", l)
	}
}

// Shutdown while clients keep connecting: every round ends cleanly, with
// Serve returning ErrServerClosed and no session counted after the wait
// began (the race detector watches the session count).
func TestShutdownDuringConnectStorm(t *testing.T) {
	for round := range 40 {
		srv := &Server{Name: "storm", Handler: panicky{}, Log: quiet}
		ln := listen(t, "127.0.0.1")
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if c, err := net.DialTimeout("tcp", ln.Addr().String(), wait); err == nil {
						c.Close()
					}
				}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		ctx, cancel := context.WithTimeout(t.Context(), wait)
		err := srv.Shutdown(ctx)
		cancel()
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("round %d: Shutdown = %v", round, err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("round %d: Serve = %v, want ErrServerClosed", round, err)
		}
	}
}

// With MaxConns reached, the next client waits in the backlog, unserved,
// and is served as soon as a session ends.
func TestMaxConnsQueues(t *testing.T) {
	a := startEcho(t, "a")
	srv := tcpProxy("maxconns", dialPool("maxconns", time.Second, NewBackend("a", a.Addr(), 1)))
	srv.MaxConns = 1
	addr := startProxy(t, srv)
	first := connect(t, addr)
	first.banner(t)

	second := connect(t, addr)
	second.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if line, err := second.r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second client read %q, %v while the first holds the only slot; want nothing", line, err)
	}
	first.conn.Close()
	if got := second.banner(t); got != "a" {
		t.Errorf("second client got banner %q once the slot freed, want a", got)
	}
}
