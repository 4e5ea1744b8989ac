package https

import (
	"bufio"
	stdtls "crypto/tls"
	"errors"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// passthrough looks at the ClientHello when some service passes TLS
// through, and relays the connection untouched to that service's
// back-ends when the SNI is one of its names (Extended Protection then
// holds end to end: the client sees Exchange's own certificate). It
// returns the connection the edge handshake must read from (the bytes
// peeked first), or done when the connection was passed through.
func (s *session) passthrough() (under net.Conn, done bool) {
	if !s.f.hasPassthrough() {
		return s.timed, false
	}
	br := bufio.NewReaderSize(s.timed, 5+maxRecord)
	hello := peekHello(br)
	pending := make([]byte, br.Buffered())
	br.Read(pending)
	if service := s.f.passthroughService(hello); service != "" {
		if !s.allowed(service) {
			s.denyTLS(service)
			return nil, true
		}
		s.relayTLS(service, pending)
		return nil, true
	}
	return &prefixConn{Conn: s.timed, pending: pending}, false
}

// accessDenied is a TLS alert record, fatal access_denied (RFC 8446
// section 6.2), sent in the clear before any handshake.
var accessDenied = []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31}

// denyTLS refuses a passed-through connection from a client outside the
// service's allow list: without the service's certificate there is no
// 403 to send, so a TLS alert says why.
func (s *session) denyTLS(service string) {
	requestErrors.WithLabelValues(s.f.name(), service, "forbidden").Inc()
	s.refused("connection refused", "forbidden", "service", service, "sni", true)
	s.timed.Write(accessDenied)
}

// maxRecord is the largest TLS record plaintext (RFC 8446 section 5.1).
const maxRecord = 16 << 10

func (f *Frontend) hasPassthrough() bool {
	for _, svc := range f.Config.Services {
		if svc.TLS == TLSPassthrough {
			return true
		}
	}
	return false
}

// passthroughService returns the service whose SNI list holds name.
func (f *Frontend) passthroughService(name string) string {
	if name == "" {
		return ""
	}
	for _, service := range slices.Sorted(maps.Keys(f.Config.Services)) {
		svc := f.Config.Services[service]
		if svc.TLS == TLSPassthrough && slices.ContainsFunc(svc.SNI, func(n string) bool { return strings.EqualFold(n, name) }) {
			return service
		}
	}
	return ""
}

// peekHello returns the SNI of the ClientHello at the head of br without
// consuming it, or "" when there is none. crypto/tls parses the hello:
// a handshake over the peeked bytes stops as soon as the hello is read.
func peekHello(br *bufio.Reader) string {
	h, err := br.Peek(5)
	if err != nil || h[0] != 0x16 {
		return ""
	}
	n := int(h[3])<<8 | int(h[4])
	rec, err := br.Peek(5 + min(n, maxRecord))
	if err != nil {
		return ""
	}
	var name string
	stop := errors.New("hello read")
	cfg := &stdtls.Config{GetConfigForClient: func(hi *stdtls.ClientHelloInfo) (*stdtls.Config, error) {
		name = hi.ServerName
		return nil, stop
	}}
	stdtls.Server(&readOnly{r: rec}, cfg).Handshake()
	return name
}

// readOnly is a net.Conn over fixed bytes that refuses writes.
type readOnly struct {
	net.Conn
	r []byte
}

func (c *readOnly) Read(p []byte) (int, error) {
	if len(c.r) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.r)
	c.r = c.r[n:]
	return n, nil
}

func (c *readOnly) Write(p []byte) (int, error)      { return 0, io.ErrClosedPipe }
func (c *readOnly) SetDeadline(time.Time) error      { return nil }
func (c *readOnly) SetReadDeadline(time.Time) error  { return nil }
func (c *readOnly) SetWriteDeadline(time.Time) error { return nil }

// prefixConn returns pending bytes before reading the connection.
type prefixConn struct {
	net.Conn
	pending []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// relayTLS sends a passed-through connection to the service's pool and
// splices the bytes both ways (splice(2) between the raw sockets).
func (s *session) relayTLS(service string, hello []byte) {
	start := time.Now()
	pool := s.f.pool(service)
	key := ""
	if a := s.f.Config.service(service).Affinity; a == AffinitySourceIP || a == AffinityRPCChannel {
		key = "ip:" + s.ip.String()
	}
	s.clk.setHard(time.Time{})
	s.clk.setIdle(0)
	s.raw.SetDeadline(time.Time{})
	be, b, err := pool.DialOrder(s.ctx, order(pool, route{key: key}))
	if err != nil {
		s.log.Warn("passthrough failed", "service", service, "err", err)
		return
	}
	defer be.Close()
	passthroughTotal.WithLabelValues(s.f.name(), service).Inc()
	release := proxy.TrackSession(pool.Name, b, be)
	defer release()
	if s.f.ProxyVersion != 0 {
		if err := proxy.WriteProxyHeader(be, s.f.ProxyVersion, s.raw.RemoteAddr(), s.raw.LocalAddr()); err != nil {
			return
		}
	}
	if _, err := be.Write(hello); err != nil {
		return
	}
	up, down, err := proxy.Splice(s.ctx, s.raw, be, s.f.idle(service))
	proxy.CountBytes(pool.Name, b.Name, up+int64(len(hello)), down)
	s.log.Info("passthrough", "service", service, "backend", b.Name, "up", up+int64(len(hello)), "down", down,
		"duration", time.Since(start).Round(time.Millisecond), "err", err)
}
