//go:build linux

package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
)

// Handler serves one client connection. It owns conn and returns when the
// session is over; the Server closes conn afterwards. ctx is cancelled when
// the Server is closed (forcefully, at the end of a shutdown's grace).
type Handler interface {
	ServeConn(ctx context.Context, conn net.Conn)
}

// Refuser is implemented by handlers that can say no in their protocol
// (an SMTP 421, a POP3 -ERR) to a client refused before routing.
type Refuser interface {
	Refuse(conn net.Conn, reason string)
}

// Server accepts client connections on one or more listeners and runs a
// Handler for each, enforcing connection limits. Set the fields before
// Serve; the zero value of each is documented.
type Server struct {
	// Name is the listener's name in logs and metrics.
	Name string
	// Handler serves each connection; required.
	Handler Handler
	// MaxConns caps simultaneous connections per listening address;
	// further clients wait in the kernel's backlog. 0 means no cap.
	MaxConns int
	// MaxPerIP caps simultaneous connections from one client address (the
	// address a trusted upstream's PROXY header gives, else the peer's);
	// the next one is refused at once. 0 means no cap.
	MaxPerIP int
	// Gate counts the sessions that MaxConns and MaxPerIP limit. Give every
	// Server of one listener the same Gate, across reloads, so that the
	// sessions of an older configuration still count; nil means a Gate of
	// this Server's own.
	Gate *Gate
	// FDs is the descriptor budget each session is charged SessionFDs
	// against; past it a new connection is closed at once (reason
	// fd_reserve). nil means ProcessFDBudget().
	FDs *FDBudget
	// Trusted lists upstream proxies (load balancers) that must send a PROXY
	// header; clients outside it must not, and any header they send is
	// taken as data and refused by the protocol. Empty means no upstream
	// is trusted.
	Trusted []netip.Prefix
	// ProxyHeaderTimeout bounds the wait for a trusted upstream's header;
	// 0 means 5 seconds.
	ProxyHeaderTimeout time.Duration
	// Log receives refusals and panics; nil means slog.Default().
	Log *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]*serving
	conns     map[net.Conn]struct{}
	gate      *Gate
	fds       *FDBudget
	logLimit  LogLimiter // refusal lines: one per reason per refusalLogInterval
	wg        sync.WaitGroup
	sessions  atomic.Int64 // accepted and not finished (the count wg waits for)
	closing   atomic.Bool
	baseCtx   context.Context
	cancel    context.CancelFunc
	draining  chan struct{}
	parker    *parker // nil when epoll is unavailable
	accepted  atomic.Uint64
	refused   atomic.Uint64
	initOnce  sync.Once
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.listeners = make(map[net.Listener]*serving)
		s.conns = make(map[net.Conn]struct{})
		s.gate, s.fds = s.Gate, s.FDs
		s.logLimit.Interval = refusalLogInterval
		if s.gate == nil {
			s.gate = NewGate()
		}
		if s.fds == nil {
			s.fds = ProcessFDBudget()
		}
		s.draining = make(chan struct{})
		s.baseCtx, s.cancel = context.WithCancel(context.Background())
		s.baseCtx = context.WithValue(s.baseCtx, drainKey{}, s.draining)
		if p, err := newParker(); err == nil {
			s.parker = p
			s.baseCtx = context.WithValue(s.baseCtx, parkerKey{}, p)
		} else {
			// epoll_create fails only when descriptors or memory run out:
			// sessions then keep their goroutines while idle.
			s.log().Error("cannot create the epoll instance idle sessions wait in; they hold goroutines instead", "err", err)
		}
	})
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// Serve accepts connections on ln until the Server is shut down. It always
// returns a non-nil error: ErrServerClosed after Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	sv, ok := s.track(ln)
	if !ok {
		ln.Close()
		return ErrServerClosed
	}
	return s.serveTracked(ln, sv)
}

// Go is Serve in a goroutine of its own, except that ln is registered
// before Go returns: a Release or Shutdown that follows always finds it
// (with a bare `go Serve(ln)` a Release could come first, fail, and leave
// the socket to be closed by a later shutdown). done, if not nil, gets
// Serve's error when it returns.
func (s *Server) Go(ln net.Listener, done func(error)) {
	s.init()
	sv, ok := s.track(ln)
	if !ok {
		ln.Close()
		if done != nil {
			done(ErrServerClosed)
		}
		return
	}
	go func() {
		err := s.serveTracked(ln, sv)
		if done != nil {
			done(err)
		}
	}()
}

// serveTracked is Serve's accept loop on a registered socket.
func (s *Server) serveTracked(ln net.Listener, sv *serving) error {
	defer s.untrack(ln, sv)
	// MaxConns is counted in the Gate rather than by netutil.LimitListener,
	// whose wrapped connections would hide the *net.TCPConn that serve
	// needs, and whose count would end with this Server.
	slot := ln.Addr().String()
	var backoff time.Duration
	for {
		if !s.gate.acquireSlot(slot, s.MaxConns, s.draining, sv.released) {
			return ErrServerClosed
		}
		conn, err := ln.Accept()
		if err != nil {
			s.gate.releaseSlot(slot)
			if s.closing.Load() || released(sv) {
				return ErrServerClosed
			}
			if backoff = nextBackoff(backoff); isTemporary(err) {
				s.log().Warn("accept failed, retrying", "listener", s.Name, "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		if !s.start(conn, slot) {
			return ErrServerClosed
		}
	}
}

// start charges an accepted connection to the descriptor budget, counts
// it and serves it; it reports false when a shutdown has begun. Past the
// budget the connection is closed at once, and Serve goes on.
func (s *Server) start(conn net.Conn, slot string) bool {
	if !s.fds.take(SessionFDs) {
		s.gate.releaseSlot(slot)
		s.refuseNow(conn, "fd_reserve")
		return true
	}
	if !s.addSession() {
		s.fds.give(SessionFDs)
		s.gate.releaseSlot(slot)
		s.refuse(conn, "shutdown")
		return false
	}
	go s.serve(conn, slot)
	return true
}

// addSession counts a new session unless shutdown has begun. It holds s.mu,
// which stopAccepting takes too, so no Add can race with Shutdown's Wait.
func (s *Server) addSession() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.wg.Add(1)
	s.sessions.Add(1)
	return true
}

// sessionDone ends what addSession began.
func (s *Server) sessionDone() {
	s.sessions.Add(-1)
	s.wg.Done()
}

// Sessions returns how many connections the Server has accepted and not
// yet finished: those being served, and those accepted but not yet
// admitted (which Active does not count yet). A listener a reload retired
// is done when this reaches 0.
func (s *Server) Sessions() int { return int(s.sessions.Load()) }

func nextBackoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	return min(2*d, time.Second)
}

// isTemporary reports accept errors worth retrying (EMFILE, ECONNABORTED…).
func isTemporary(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && !errors.Is(err, net.ErrClosed)
}

// serve runs one connection: limits, PROXY header, handler, cleanup. The
// cleanup runs when the handler returns, or, for a session the handler
// handed off (ClientConn.HandOff), when that session ends.
func (s *Server) serve(raw net.Conn, slot string) {
	tcp, ok := raw.(*net.TCPConn)
	if !ok {
		raw.Close()
		s.fds.give(SessionFDs)
		s.gate.releaseSlot(slot)
		s.sessionDone()
		s.log().Error("listener returned a non-TCP connection", "listener", s.Name)
		return
	}
	conn := &ClientConn{TCPConn: tcp, remote: tcp.RemoteAddr()}
	conn.atEnd(s.sessionDone)
	conn.atEnd(func() { s.gate.releaseSlot(slot) })
	conn.atEnd(func() { s.fds.give(SessionFDs) })
	defer conn.endUnlessHandedOff()
	s.register(conn)
	conn.atEnd(func() { s.unregister(conn) })
	if s.trusted(addrOf(conn.remote)) && !s.readHeader(conn) {
		return
	}
	if !s.admit(conn) {
		return
	}
	s.accepted.Add(1)
	sessionsTotal.WithLabelValues(s.Name).Inc()
	active := sessionsActive.WithLabelValues(s.Name)
	active.Inc()
	conn.atEnd(active.Dec)
	defer s.recoverSession(conn)
	s.Handler.ServeConn(s.baseCtx, conn)
}

// register makes the connection one that Close closes.
//
// A connection accepted before a shutdown began is served even when its
// goroutine gets here after it began (Serve counted it under the lock that
// starts a shutdown): refusing it then would reset a client that a reload
// or a drain promised to serve.
func (s *Server) register(conn *ClientConn) {
	s.mu.Lock()
	s.conns[conn] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) unregister(conn *ClientConn) {
	conn.Close()
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
}

// admit applies the per-IP limit to the client's address (after a
// trusted upstream's PROXY header, the address it gave); on refusal it
// tells the client and closes the connection.
func (s *Server) admit(conn *ClientConn) bool {
	ip := addrOf(conn.remote)
	if !s.gate.admitIP(ip, s.MaxPerIP) {
		s.refuse(conn, "per_ip_limit")
		return false
	}
	conn.atEnd(func() { s.gate.releaseIP(ip) })
	return true
}

// refuse counts, logs and answers a refused connection, then closes it.
func (s *Server) refuse(conn net.Conn, reason string) {
	s.countRefusal(conn, reason)
	if r, ok := s.Handler.(Refuser); ok {
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		r.Refuse(conn, reason)
	}
	conn.Close()
}

// refuseNow closes a refused connection without a word: when descriptors
// run short, the one this connection holds is given back at once.
func (s *Server) refuseNow(conn net.Conn, reason string) {
	conn.Close()
	s.countRefusal(conn, reason)
}

// countRefusal counts a refusal and logs it, one line per reason per
// refusalLogInterval with the number held back, so that a flood of
// refusals cannot flood the log.
func (s *Server) countRefusal(conn net.Conn, reason string, attrs ...any) {
	s.refused.Add(1)
	refusedTotal.WithLabelValues(s.Name, reason).Inc()
	if ok, held := s.logLimit.allow(reason, "", time.Now()); ok {
		s.log().Warn("connection refused", append([]any{"listener", s.Name, "client", conn.RemoteAddr().String(),
			"reason", reason, "refusals_not_logged", held}, attrs...)...)
	}
}

// readHeader reads a trusted upstream's PROXY header into conn.
func (s *Server) readHeader(conn *ClientConn) bool {
	timeout := s.ProxyHeaderTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	h, err := ReadProxyHeader(conn.TCPConn, timeout)
	if err != nil {
		s.countRefusal(conn, "proxy_header", "err", err)
		return false
	}
	conn.Header = h
	if h.Command == proxyproto.PROXY && h.SourceAddr != nil {
		conn.remote = h.SourceAddr
	}
	return true
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// recoverSession is the last net for a panicking handler: the session ends
// with a logged stack, and every other session goes on. A session the
// handler handed off before panicking ends here too: what it was handed
// to may never end it, and a session left counted would hold every
// Shutdown for its whole grace.
func (s *Server) recoverSession(conn *ClientConn) {
	if v := recover(); v != nil {
		s.log().Error("session panicked", "listener", s.Name, "client", conn.RemoteAddr().String(),
			"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		conn.end()
	}
}

// serving is one socket a Serve loop accepts on.
type serving struct {
	released chan struct{} // closed by Release
	done     chan struct{} // closed when its Serve has returned
}

func (s *Server) track(ln net.Listener) (*serving, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil, false
	}
	sv := &serving{released: make(chan struct{}), done: make(chan struct{})}
	s.listeners[ln] = sv
	return sv, true
}

func (s *Server) untrack(ln net.Listener, sv *serving) {
	s.mu.Lock()
	delete(s.listeners, ln)
	s.mu.Unlock()
	close(sv.done)
}

// Release stops accepting on ln without closing it, and returns once
// Serve(ln) has returned, so that another Server (a reloaded
// configuration) can go on accepting on the same socket: the port never
// refuses a connection. Sessions already accepted are not affected.
func (s *Server) Release(ln net.Listener) error {
	s.init()
	s.mu.Lock()
	sv, ok := s.listeners[ln]
	s.mu.Unlock()
	if !ok {
		return errors.New("proxy: Release of a socket this server does not serve")
	}
	dl, ok := ln.(interface{ SetDeadline(time.Time) error })
	if !ok {
		return errors.New("proxy: Release needs a listener with SetDeadline")
	}
	close(sv.released)
	dl.SetDeadline(time.Now()) // wakes Accept
	<-sv.done
	return dl.SetDeadline(time.Time{})
}

func released(sv *serving) bool {
	select {
	case <-sv.released:
		return true
	default:
		return false
	}
}

// Shutdown stops accepting, tells sessions the server is stopping (see
// ShuttingDown), and waits for them to end. When ctx is done first it closes
// the remaining sessions and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.stopAccepting()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		s.closeParker()
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
	}
}

// Close stops accepting and closes every session at once.
func (s *Server) Close() error {
	s.init()
	s.stopAccepting()
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	go func() { s.wg.Wait(); s.closeParker() }()
	return nil
}

// closeParker stops the parker once no session can use it any more.
func (s *Server) closeParker() {
	if s.parker != nil {
		s.parker.close() // idempotent
	}
}

func (s *Server) stopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Swap(true) {
		return
	}
	close(s.draining)
	for ln := range s.listeners {
		ln.Close()
	}
}

// Stats returns how many sessions the Server has accepted and how many
// connections it refused before routing, since it started.
func (s *Server) Stats() (accepted, refused uint64) {
	return s.accepted.Load(), s.refused.Load()
}

// Active returns the number of sessions being served.
func (s *Server) Active() int {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

type drainKey struct{}

type parkerKey struct{}

// ShuttingDown returns a channel closed when the session's server begins a
// graceful shutdown, so a frontend can say goodbye to an idle client in its
// protocol. It returns nil (never ready) for a context of no Server.
func ShuttingDown(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(drainKey{}).(chan struct{})
	return ch
}

// addrOf returns the IP of a TCP address (zero Addr for others).
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}
