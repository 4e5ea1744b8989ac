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

// ClientConn is an accepted client connection: the raw TCP socket, kept raw
// so Splice can use splice(2), and the client's real address.
type ClientConn struct {
	*net.TCPConn
	// Header is the PROXY header a trusted upstream sent, or nil.
	Header *proxyproto.Header
	remote net.Addr

	cleanup   []func() // what ends the session, in order of adding
	handedOff bool
}

// RemoteAddr returns the client's address: the PROXY header's source when
// a trusted upstream sent one, else the socket's peer.
func (c *ClientConn) RemoteAddr() net.Addr { return c.remote }

// HandOff lets a handler return from ServeConn while its session goes on
// without a goroutine of its own (a parked splice). The Server then keeps
// the connection open and counted; end, which must be called exactly once
// when the session is over, closes it and does the Server's bookkeeping.
func (c *ClientConn) HandOff() (end func()) {
	c.handedOff = true
	return c.end
}

// atEnd adds f to what ends the session, run in reverse order of adding.
func (c *ClientConn) atEnd(f func()) { c.cleanup = append(c.cleanup, f) }

func (c *ClientConn) end() {
	for i := len(c.cleanup) - 1; i >= 0; i-- {
		c.cleanup[i]()
	}
	c.cleanup = nil
}

// endUnlessHandedOff ends the session when ServeConn returns, unless the
// handler handed it off.
func (c *ClientConn) endUnlessHandedOff() {
	if !c.handedOff {
		c.end()
	}
}

// Server accepts client connections on one or more listeners and runs a
// Handler for each, enforcing connection limits. Set the fields before
// Serve; the zero value of each is documented.
type Server struct {
	// Name is the listener's name in logs and metrics.
	Name string
	// Handler serves each connection; required.
	Handler Handler
	// MaxConns caps simultaneous connections per listening socket; further
	// clients wait in the kernel's backlog. 0 means no cap.
	MaxConns int
	// MaxPerIP caps simultaneous connections from one client address; the
	// next one is refused at once. 0 means no cap.
	MaxPerIP int
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
	perIP     map[netip.Addr]int
	wg        sync.WaitGroup
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
		s.perIP = make(map[netip.Addr]int)
		s.draining = make(chan struct{})
		s.baseCtx, s.cancel = context.WithCancel(context.Background())
		s.baseCtx = context.WithValue(s.baseCtx, drainKey{}, s.draining)
		if p, err := newParker(); err == nil {
			s.parker = p
			s.baseCtx = context.WithValue(s.baseCtx, parkerKey{}, p)
		} else {
			s.log().Warn("idle sessions will hold goroutines: no epoll parker", "err", err)
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
	// MaxConns is a semaphore rather than netutil.LimitListener, whose
	// wrapped connections would hide the *net.TCPConn that serve needs.
	var slots chan struct{}
	if s.MaxConns > 0 {
		slots = make(chan struct{}, s.MaxConns)
	}
	var backoff time.Duration
	for {
		if !s.acquireSlot(slots, sv) {
			return ErrServerClosed
		}
		conn, err := ln.Accept()
		if err != nil {
			releaseSlot(slots)
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
		if !s.addSession() {
			releaseSlot(slots)
			s.refuse(conn, "shutdown")
			return ErrServerClosed
		}
		go s.serve(conn, slots)
	}
}

// acquireSlot waits for one of MaxConns slots (at once when slots is nil),
// giving up when shutdown begins.
func (s *Server) acquireSlot(slots chan struct{}, sv *serving) bool {
	if slots == nil {
		return true
	}
	select {
	case slots <- struct{}{}:
		return true
	case <-s.draining:
		return false
	case <-sv.released:
		return false
	}
}

func releaseSlot(slots chan struct{}) {
	if slots != nil {
		<-slots
	}
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
	return true
}

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
func (s *Server) serve(raw net.Conn, slots chan struct{}) {
	tcp, ok := raw.(*net.TCPConn)
	if !ok {
		raw.Close()
		releaseSlot(slots)
		s.wg.Done()
		s.log().Error("listener returned a non-TCP connection", "listener", s.Name)
		return
	}
	conn := &ClientConn{TCPConn: tcp, remote: tcp.RemoteAddr()}
	conn.atEnd(s.wg.Done)
	conn.atEnd(func() { releaseSlot(slots) })
	defer conn.endUnlessHandedOff()
	peer := addrOf(conn.remote)
	if !s.admit(conn, peer) {
		return
	}
	conn.atEnd(func() { s.release(conn, peer) })
	if s.trusted(peer) && !s.readHeader(conn) {
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

// admit applies the per-IP limit and registers the connection; on refusal
// it tells the client and closes the connection.
//
// A connection accepted before a shutdown began is served even when its
// goroutine gets here after it began (Serve counted it under the lock that
// starts a shutdown): refusing it then would reset a client that a reload
// or a drain promised to serve.
func (s *Server) admit(conn *ClientConn, peer netip.Addr) bool {
	s.mu.Lock()
	over := s.MaxPerIP > 0 && s.perIP[peer] >= s.MaxPerIP
	if !over {
		s.perIP[peer]++
		s.conns[conn] = struct{}{}
	}
	s.mu.Unlock()
	if over {
		s.refuse(conn, "per_ip_limit")
		return false
	}
	return true
}

func (s *Server) release(conn *ClientConn, peer netip.Addr) {
	conn.Close()
	s.mu.Lock()
	if s.perIP[peer]--; s.perIP[peer] <= 0 {
		delete(s.perIP, peer)
	}
	delete(s.conns, conn)
	s.mu.Unlock()
}

// refuse counts, logs and answers a refused connection, then closes it.
func (s *Server) refuse(conn net.Conn, reason string) {
	s.refused.Add(1)
	refusedTotal.WithLabelValues(s.Name, reason).Inc()
	s.log().Warn("connection refused", "listener", s.Name, "client", conn.RemoteAddr().String(), "reason", reason)
	if r, ok := s.Handler.(Refuser); ok {
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		r.Refuse(conn, reason)
	}
	conn.Close()
}

// readHeader reads a trusted upstream's PROXY header into conn.
func (s *Server) readHeader(conn *ClientConn) bool {
	timeout := s.ProxyHeaderTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	h, err := ReadProxyHeader(conn.TCPConn, timeout)
	if err != nil {
		s.refused.Add(1)
		refusedTotal.WithLabelValues(s.Name, "proxy_header").Inc()
		s.log().Warn("PROXY header refused", "listener", s.Name, "upstream", conn.remote.String(), "err", err)
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
// with a logged stack, and every other session goes on.
func (s *Server) recoverSession(conn net.Conn) {
	if v := recover(); v != nil {
		s.log().Error("session panicked", "listener", s.Name, "client", conn.RemoteAddr().String(),
			"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
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
