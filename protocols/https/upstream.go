package https

import (
	"bufio"
	stdtls "crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// upstream is one back-end connection of one client connection. It is
// never handed to another client connection: it lives and dies with the
// session that dialed it.
type upstream struct {
	b       *proxy.Backend
	pool    string
	raw     net.Conn // the TCP connection, for liveness checks
	conn    net.Conn // what is spoken over: timed, TLS on top when configured
	timed   *timedConn
	plain   bool          // no TLS: readiness can be awaited on the socket
	br      *bufio.Reader // nil while no response is being read
	bw      *bufio.Writer // nil while no request is being written
	release func()
	pinned  bool
	broken  bool      // no further request may use it
	used    time.Time // end of its last exchange
	up      int64
	down    int64
}

// Sizes of the buffers of each connection: heads and small bodies fit,
// large bodies bypass them (see copyBig).
const (
	readBufSize  = 8 << 10
	writeBufSize = 8 << 10
)

// dial connects to the first back-end of order that answers and completes
// the PROXY header and TLS handshake, trying the next one when any step
// fails. Nothing of the request has been sent yet, so trying another
// back-end is safe.
func (s *session) dial(pool *proxy.Pool, order []*proxy.Backend, host []byte) (*upstream, error) {
	var last error
	for len(order) > 0 {
		raw, b, err := pool.DialOrder(s.ctx, order)
		if err != nil {
			if last != nil {
				return nil, fmt.Errorf("%w (before that: %w)", err, last)
			}
			return nil, err
		}
		u, err := s.setup(raw, b, pool, host)
		if err == nil {
			return u, nil
		}
		raw.Close()
		s.log.Warn("back-end connection failed", "backend", b.Name, "err", err)
		last = err
		order = after(order, b)
	}
	return nil, fmt.Errorf("%w: %w", proxy.ErrNoBackend, last)
}

// after returns the back-ends that follow b in order.
func after(order []*proxy.Backend, b *proxy.Backend) []*proxy.Backend {
	for i, o := range order {
		if o == b {
			return order[i+1:]
		}
	}
	return nil
}

// setup sends the PROXY header and does the TLS handshake on a fresh
// back-end connection.
func (s *session) setup(raw net.Conn, b *proxy.Backend, pool *proxy.Pool, host []byte) (*upstream, error) {
	f := s.f
	if f.ProxyVersion != 0 {
		raw.SetWriteDeadline(time.Now().Add(connectTimeout(pool)))
		err := proxy.WriteProxyHeader(raw, f.ProxyVersion, s.raw.RemoteAddr(), s.raw.LocalAddr())
		raw.SetWriteDeadline(time.Time{})
		if err != nil {
			return nil, err
		}
	}
	timed := &timedConn{Conn: raw, c: &s.clk}
	var conn net.Conn = timed
	if f.BackendTLSMode == proxy.TLSImplicit {
		tc, err := s.handshake(conn, pool, host)
		if err != nil {
			return nil, err
		}
		conn = tc
	}
	u := &upstream{b: b, pool: pool.Name, raw: raw, conn: conn, plain: f.BackendTLSMode != proxy.TLSImplicit}
	u.timed = timed
	u.release = proxy.TrackSession(pool.Name, b, raw)
	return u, nil
}

// handshake runs the client TLS handshake within the connect timeout.
// The SNI is the configured server name, else the request's host.
func (s *session) handshake(conn net.Conn, pool *proxy.Pool, host []byte) (*stdtls.Conn, error) {
	cfg := s.f.BackendTLS
	if cfg == nil {
		cfg = &stdtls.Config{}
	}
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		cfg = cfg.Clone()
		cfg.ServerName = hostOnly(host)
	}
	tc := stdtls.Client(conn, cfg)
	s.clk.setHard(time.Now().Add(connectTimeout(pool)))
	err := tc.Handshake()
	s.clk.setHard(time.Time{})
	if err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return tc, nil
}

func connectTimeout(pool *proxy.Pool) time.Duration {
	if pool.ConnectTimeout > 0 {
		return pool.ConnectTimeout
	}
	return 3 * time.Second
}

// hostOnly strips the port from a Host header value.
func hostOnly(host []byte) string {
	h := string(host)
	if hh, _, err := net.SplitHostPort(h); err == nil {
		return hh
	}
	return h
}

// close ends the back-end connection.
func (u *upstream) close() {
	if u.release != nil {
		u.release()
		u.release = nil
		proxy.CountBytes(u.pool, u.b.Name, u.up, u.down)
	}
	u.broken = true
	u.raw.Close() // no TLS close_notify: HTTP framing, not the close, ends a message
	u.releaseReader()
	u.releaseWriter()
}

// usable reports whether a kept-alive connection may take a request. The
// socket is asked after a second of rest, or always for a pinned one (a
// login that ended must end its client connection before a request is
// sent, not after): a connection that just answered is not closing yet,
// and the question costs a system call.
func (u *upstream) usable() bool {
	if u.broken || (u.br != nil && u.br.Buffered() > 0) {
		return false
	}
	return (!u.pinned && time.Since(u.used) < time.Second) || alive(u.raw, u.plain)
}
