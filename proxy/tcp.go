//go:build linux

package proxy

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Affinities the engine knows; protocol frontends add their own keys.
const (
	AffinityNone     = "none"
	AffinitySourceIP = "source-ip"
)

// TCP is the layer-4 frontend: it routes each connection by its client
// address (or not at all), optionally sends a PROXY header, and splices.
type TCP struct {
	// Link is how the listener reaches clients and back-ends: EdgeTLS, if
	// set, terminates TLS from clients (implicit TLS: the first byte is
	// the ClientHello), and nil relays bytes as they are; BackendTLS, if
	// set, speaks TLS to the back-end.
	Link
	// Pool holds the back-ends; required.
	Pool *Pool
	// Affinity is AffinitySourceIP to keep one client on one back-end;
	// "" or AffinityNone balances every connection by the pool's policy.
	Affinity string
	// HandshakeTimeout bounds each TLS handshake; 0 means 10 seconds.
	HandshakeTimeout time.Duration
}

// ServeConn implements Handler.
func (t *TCP) ServeConn(ctx context.Context, conn net.Conn) {
	start := time.Now()
	if t.EdgeTLS != nil {
		tc, err := t.handshake(stdtls.Server(conn, t.EdgeTLS), conn)
		if err != nil {
			t.log().Info("TLS handshake failed", "listener", t.Pool.Name, "client", conn.RemoteAddr().String(), "err", err)
			return
		}
		conn = tc
	}
	key := ""
	if t.Affinity == AffinitySourceIP {
		key = addrOf(conn.RemoteAddr()).String()
	}
	be, b, err := t.Pool.Dial(ctx, key)
	if err != nil {
		t.log().Warn("session failed", "listener", t.Pool.Name, "client", conn.RemoteAddr().String(), "err", err)
		return
	}
	s := &tcpSession{t: t, start: start, client: conn, backend: be, b: b}
	s.begin()
	if err := t.prepareBackend(s, conn); err != nil {
		t.log().Warn("back-end setup failed", "listener", t.Pool.Name, "backend", b.Name, "err", err)
		s.end(0, 0, err)
		return
	}
	if s.park(ctx) {
		return
	}
	up, down, err := Splice(ctx, conn, s.backend, t.Idle)
	s.end(up, down, err)
}

// handshake runs a TLS handshake within the handshake timeout.
func (t *TCP) handshake(tc *stdtls.Conn, raw net.Conn) (*stdtls.Conn, error) {
	timeout := t.HandshakeTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	raw.SetDeadline(time.Now().Add(timeout))
	defer raw.SetDeadline(time.Time{})
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc, nil
}

// prepareBackend sends the PROXY header, then starts TLS to the back-end:
// the header goes first, in plaintext, as Postfix and Dovecot expect it.
func (t *TCP) prepareBackend(s *tcpSession, client net.Conn) error {
	if t.ProxyVersion != 0 {
		if err := WriteProxyHeader(s.backend, t.ProxyVersion, client.RemoteAddr(), client.LocalAddr()); err != nil {
			return err
		}
	}
	if t.BackendTLS == nil {
		return nil
	}
	cfg := t.BackendTLS
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName, _, _ = net.SplitHostPort(s.b.Addr)
	}
	tc, err := t.handshake(stdtls.Client(s.backend, cfg), s.backend)
	if err != nil {
		return fmt.Errorf("TLS to back-end: %w", err)
	}
	s.backend = tc
	return nil
}

// tcpSession is one relayed connection, from dial to its log line.
type tcpSession struct {
	t               *TCP
	start           time.Time
	client, backend net.Conn
	b               *Backend
	release         func()

	mu     sync.Mutex
	parked *parkedSplice // set once handed to the parker
	closed bool
}

// errClosedByOperator ends a session whose back-end an operator disabled.
var errClosedByOperator = errors.New("closed: back-end disabled")

// begin counts the session on its back-end.
func (s *tcpSession) begin() {
	s.release = TrackSession(s.t.Pool.Name, s.b, s)
}

// park hands the session to the Server's parker when both ends are raw
// TCP sockets: ServeConn returns, and no goroutine waits while the session
// idles. It reports false when the session must be spliced here instead.
func (s *tcpSession) park(ctx context.Context) bool {
	p, _ := ctx.Value(parkerKey{}).(*parker)
	cc, ok := s.client.(*ClientConn)
	bt, ok2 := s.backend.(*net.TCPConn)
	if p == nil || !ok || !ok2 {
		return false
	}
	endConn := cc.HandOff()
	ps, err := p.splice(ctx, cc.TCPConn, bt, s.t.Idle, s.t.log(), func(up, down int64, err error) {
		s.end(up, down, err)
		endConn()
	})
	if err != nil {
		cc.handedOff = false // splice here after all; ServeConn's return ends it
		return false
	}
	s.mu.Lock()
	s.parked = ps
	closed := s.closed
	s.mu.Unlock()
	if closed {
		ps.abort(errClosedByOperator)
	}
	return true
}

// Close ends the session from outside (Backend.CloseSessions). A parked
// session must be woken rather than have its sockets closed under it: a
// closed socket leaves epoll silently, and its session would never end.
func (s *tcpSession) Close() error {
	s.mu.Lock()
	s.closed = true
	ps := s.parked
	s.mu.Unlock()
	if ps != nil {
		ps.abort(errClosedByOperator)
		return nil
	}
	return s.backend.Close()
}

// end closes the back-end connection, counts and logs the session.
func (s *tcpSession) end(up, down int64, err error) {
	s.backend.Close()
	s.release()
	CountBytes(s.t.Pool.Name, s.b.Name, up, down)
	log := s.t.log()
	if !log.Enabled(context.Background(), slog.LevelInfo) {
		return // skip building the line: at 10,000 sessions/s it shows
	}
	outcome := "ok"
	switch {
	case errors.Is(err, ErrIdle):
		outcome = "idle_timeout"
	case err != nil:
		outcome = "error"
	}
	log.Info("session", "listener", s.t.Pool.Name, "client", s.client.RemoteAddr().String(), "backend", s.b.Name,
		"up", up, "down", down, "duration", time.Since(s.start).Round(time.Millisecond), "outcome", outcome)
}

func (t *TCP) log() *slog.Logger { return t.Logger() }
