package https

// Implementation notes (invariants):
//
//   - One client connection is one session: it reads requests one after
//     the other and forwards each over a back-end connection that belongs
//     to this session alone. Back-end connections are kept alive for the
//     session's later requests and are never handed to another client
//     connection, so a back-end's connection-bound login can never serve
//     someone else (haproxy issues 581, 2985).
//   - A back-end connection that answered 401 offering NTLM or Negotiate
//     (or 407 for a proxy, or Persistent-Auth: true), or that carried a
//     request with Authorization: NTLM or Negotiate, is pinned: every later
//     request of its client connection goes over it, whatever its service,
//     and when either side closes, both close ([MS-NTHT] section 1: the
//     NTLM handshake authenticates the TCP connection, not the request).
//   - A request of which any byte reached a back-end is never retried on
//     another one (MAPI's MapiSequence changes with every response, and
//     ROP batches are not idempotent); only a failed dial or TLS handshake
//     moves on to the next back-end.
//   - Header names, the request line and the status line pass through in
//     the bytes the peer sent; only hop-by-hop headers are removed and
//     X-Forwarded-For, X-Forwarded-Proto and X-Real-IP are set (what
//     untrusted clients sent of them is dropped). HTTP/1.1 to back-ends.
//     The request head is written anew from what was parsed, and nothing
//     that framed or routed the request here (Content-Length,
//     Transfer-Encoding, Host) is ever among the headers removed.
//   - The HTTP/1.1 parser is hand-written, not net/http's: net/http
//     canonicalises header names (Outlook fails on "Www-Authenticate"),
//     buffers and rewrites what it forwards, and cannot keep a back-end
//     connection per client connection for NTLM. It is stricter than
//     RFC 9112 requires wherever a lenient reading could differ from
//     HTTP.sys's (see parseFraming, canonicalPath), and fuzzed.
//   - Bodies stream both ways with no buffering: bytes read are written on
//     before the next read can block, and a request body flows while its
//     response is read (RPC_IN_DATA gets no response while it lives, and
//     Expect: 100-continue needs the back-end's 100 relayed first).
//   - A body's end is known exactly or the message is refused: both
//     Content-Length and Transfer-Encoding, several Content-Lengths, a
//     Transfer-Encoding other than exactly chunked and malformed chunk
//     sizes are errors, never guesses (request smuggling). A request body
//     found malformed midway cuts its back-end connection.
//   - The service is chosen from the path as IIS resolves it; a path whose
//     resolution gatehouse cannot be sure of is refused.
//   - The first PDU of an RPC channel body is read only when Content-Length
//     is at least 20 ([MS-RPCH] 2.1.2.1.5: smaller bodies are echo requests
//     and authentication legs, and waiting for 20 bytes hangs the client),
//     and never more bytes than the PDU's header announces.
//   - There is no total request timeout. A request ends when no byte moved
//     either way on any of the session's connections for the service's idle
//     time, which by default outlasts Exchange's own timers.
//   - HTTP/2 is never negotiated with clients (NTLM cannot run over it;
//     [MS-RPCH] needs HTTP/1.x).
//   - A connection holds a buffer only while bytes move on it: a held long
//     poll on a plain back-end socket and an idle keep-alive connection
//     wait on the socket itself, with no buffer.

import (
	"bufio"
	"context"
	"crypto/rand"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// Frontend is the HTTPS frontend of one listener, Exchange-aware: it
// classifies each request into a service by path, routes it to that
// service's pool with its affinity, pins NTLM and Negotiate logins to
// their back-end connection, keeps the two channels of an Outlook
// Anywhere connection together and holds long polls. Set the fields
// before the first connection; the zero value of each is documented.
type Frontend struct {
	// Name names the listener in logs and metrics; "" means Pool.Name.
	Name string
	// Pool holds the listener's back-ends, used by every service that has
	// no pool of its own in Services. Required.
	Pool *proxy.Pool
	// Services holds a pool per service name (see Services), each with
	// its own Backend values so that health is kept per back-end and
	// service. A service absent here uses Pool.
	Services map[string]*proxy.Pool
	// Link is how the listener reaches clients and back-ends. EdgeTLS
	// nil offers no TLS; only HTTP/1.1 is negotiated, whatever its
	// NextProtos list (NTLM cannot run over HTTP/2); TLSMode TLSImplicit
	// is TLS from the first byte (443), anything else plain HTTP.
	// TLSRequired, on a plain-HTTP listener, answers every request with a
	// redirect to https, as Config.RedirectHTTPS does. BackendTLSMode
	// TLSImplicit reaches back-ends over TLS (BackendTLS nil: crypto/tls
	// defaults). Idle is the least idle timeout of every service without
	// one of its own in Config: DefaultIdle applies when it is longer, so
	// a listener-wide value never cuts ActiveSync's 59-minute heartbeat (0:
	// DefaultIdle alone). Throttle counts 401 answers to requests that
	// carried credentials (Basic, NTLM AUTHENTICATE) and refuses blocked
	// clients with 429. Log gets one line per request.
	proxy.Link
	// ACME answers ACME HTTP-01 challenges (/.well-known/acme-challenge/)
	// on a plain listener, before any redirect; nil passes them on like
	// any request.
	ACME http.Handler
	// Config is the listener's https section; SetDefaults is applied to it
	// at the first connection.
	Config Config

	initOnce    sync.Once
	watchOnce   sync.Once
	edge        *stdtls.Config
	trusted     []netip.Prefix
	allow       map[string][]netip.Prefix // per service; absent: everyone
	secret      []byte
	channels    channels
	cookieCache sync.Map
	mu          sync.Mutex
	sessions    map[*session]struct{}
	draining    atomic.Bool
	certs       certState
	refusals    proxy.LogLimiter // lines about refused requests and timeouts

}

// init prepares what every session shares, once.
func (f *Frontend) init() {
	f.initOnce.Do(func() {
		f.Config.SetDefaults()
		f.trusted, _ = f.Config.trustedPrefixes() // checked by Validate
		f.allow, _ = f.Config.allowPrefixes()
		f.secret = []byte(f.Config.CookieSecret)
		if len(f.secret) == 0 {
			f.secret = make([]byte, 32)
			rand.Read(f.secret)
		}
		f.edge = http1Only(f.EdgeTLS)
		f.sessions = make(map[*session]struct{})
	})
}

// http1Only returns cfg with "h2" removed from the protocols it offers.
func http1Only(cfg *stdtls.Config) *stdtls.Config {
	if cfg == nil {
		return nil
	}
	out := cfg.Clone()
	out.NextProtos = slices.DeleteFunc(slices.Clone(cfg.NextProtos), func(p string) bool { return p == "h2" })
	if len(out.NextProtos) == 0 || !slices.Contains(out.NextProtos, "http/1.1") {
		out.NextProtos = append([]string{"http/1.1"}, out.NextProtos...)
	}
	return out
}

func (f *Frontend) name() string {
	if f.Name != "" {
		return f.Name
	}
	return f.Pool.Name
}

func (f *Frontend) log() *slog.Logger {
	if f.Log != nil {
		return f.Log
	}
	return slog.Default()
}

// pool returns the pool of a service.
func (f *Frontend) pool(service string) *proxy.Pool {
	if p := f.Services[service]; p != nil {
		return p
	}
	return f.Pool
}

// idle returns the idle timeout of a service.
func (f *Frontend) idle(service string) time.Duration {
	if s, ok := f.Config.Services[service]; ok && s.Idle > 0 {
		return s.Idle
	}
	return max(f.Idle, DefaultIdle(service))
}

func (f *Frontend) implicitTLS() bool { return f.TLSMode == proxy.TLSImplicit && f.EdgeTLS != nil }

// ServeConn implements proxy.Handler: it serves the client connection's
// requests until the client or a back-end ends it.
func (f *Frontend) ServeConn(ctx context.Context, conn net.Conn) {
	f.init()
	f.watchOnce.Do(func() { f.watchShutdown(ctx) })
	s := f.newSession(ctx, conn)
	if !f.track(s) {
		return
	}
	defer f.untrack(s)
	defer s.end()
	stop := context.AfterFunc(ctx, s.abort)
	defer stop()
	if f.implicitTLS() && !s.startTLS() {
		return
	}
	for s.next() {
		if !s.handle() || s.aborted.Load() {
			return
		}
	}
}

// Refuse implements proxy.Refuser: a 503 naming the reason, over TLS on
// an implicit-TLS listener.
func (f *Frontend) Refuse(conn net.Conn, reason string) {
	f.init()
	msg := "too many connections"
	if reason == "shutdown" {
		msg = "server shutting down"
	}
	var c net.Conn = conn
	if f.implicitTLS() {
		conn.SetDeadline(time.Now().Add(time.Second))
		tc := stdtls.Server(conn, f.edge)
		if tc.Handshake() != nil {
			return
		}
		c = tc
	}
	fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Content-Length: %d\r\nRetry-After: 10\r\nConnection: close\r\n\r\n%s\n", len(msg)+1, msg)
}

// watchShutdown closes idle client connections when a graceful shutdown
// starts; busy ones close after their current response.
func (f *Frontend) watchShutdown(ctx context.Context) {
	ch := proxy.ShuttingDown(ctx)
	if ch == nil {
		return
	}
	go func() {
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
		f.draining.Store(true)
		f.mu.Lock()
		for s := range f.sessions {
			s.wake()
		}
		f.mu.Unlock()
	}()
}

func (f *Frontend) track(s *session) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.draining.Load() {
		return false
	}
	f.sessions[s] = struct{}{}
	return true
}

func (f *Frontend) untrack(s *session) {
	f.mu.Lock()
	delete(f.sessions, s)
	f.mu.Unlock()
}

// Session states, for shutdown.
const (
	stateBusy    int32 = iota // reading or serving a request
	stateIdle                 // waiting for the next request
	stateClosing              // told to go
)

// session is one client connection.
type session struct {
	f       *Frontend
	ctx     context.Context
	raw     net.Conn // as accepted
	conn    net.Conn // what HTTP is spoken over: timed, TLS on top
	timed   *timedConn
	tls     bool
	ip      netip.Addr
	clk     clock
	state   atomic.Int32
	br      *bufio.Reader // nil while no request is read (buffers.go)
	bw      *bufio.Writer // nil while nothing is written
	reqBuf  []byte
	resBuf  []byte
	req     request
	resp    head
	ups     []*upstream // kept-alive back-end connections, least recent first
	pinned  *upstream
	user    string                   // who the pinned connection's login is, once seen
	cur     atomic.Pointer[upstream] // the back-end connection of the exchange in progress
	aborted atomic.Bool
	served  int // requests read on this connection
	log     *slog.Logger
}

func (f *Frontend) newSession(ctx context.Context, conn net.Conn) *session {
	s := &session{f: f, ctx: ctx, raw: conn}
	s.timed = &timedConn{Conn: conn, c: &s.clk}
	s.conn = s.timed
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		s.ip = ta.AddrPort().Addr().Unmap()
	}
	s.log = f.log().With("listener", f.name(), "client", conn.RemoteAddr().String())
	return s
}

// startTLS runs the edge handshake within the header timeout, after
// giving passthrough services their chance at the ClientHello.
func (s *session) startTLS() bool {
	s.clk.setHard(time.Now().Add(s.f.Config.HeaderTimeout))
	defer s.clk.setHard(time.Time{})
	under, done := s.passthrough()
	if done {
		return false
	}
	tc, err := tls.ServerHandshake(under, s.f.edge)
	if err != nil {
		if isTimeout(err) && !s.aborted.Load() {
			s.refused("tls handshake timed out", "tls_timeout", "timeout", s.f.Config.HeaderTimeout)
		}
		s.log.Debug("tls handshake failed", "err", err)
		return false
	}
	s.tls = true
	s.conn = tc
	return true
}

// next waits for the next request and reads its head: up to KeepAlive for
// the first byte (HeaderTimeout on a new connection), then up to
// HeaderTimeout for the whole head. KeepAlive is for the wait between two
// requests: a connection that never sent one would otherwise hold its
// descriptor for KeepAlive without sending a byte (slowloris), where nginx
// and HAProxy count their header timeout from the accept.
func (s *session) next() bool {
	cfg := &s.f.Config
	wait := cfg.KeepAlive
	if s.served == 0 {
		wait = min(wait, cfg.HeaderTimeout)
	}
	s.clk.setIdle(wait)
	s.clk.setHard(time.Time{})
	s.state.Store(stateIdle)
	if s.f.draining.Load() {
		return false
	}
	err := s.awaitRequest()
	if !s.state.CompareAndSwap(stateIdle, stateBusy) {
		return false
	}
	if err != nil {
		if isTimeout(err) && s.served == 0 && !s.aborted.Load() {
			s.refused("connection timed out", "no_request", "waited", wait)
		}
		return false
	}
	s.clk.setHard(time.Now().Add(cfg.HeaderTimeout))
	err = readHead(s.rd(), s.reqBuf, cfg.MaxHeaderBytes, &s.req.head)
	s.reqBuf = s.req.raw[:0]
	s.clk.setHard(time.Time{})
	if err != nil {
		s.refuseHead(err)
		return false
	}
	s.served++
	return true
}

// refused logs a refusal or a timeout of this client, rate-limited per
// reason and client address (see proxy.LogLimiter).
func (s *session) refused(msg, reason string, attrs ...any) {
	s.f.refusals.Log(s.ctx, s.log, slog.LevelInfo, msg, reason, s.ip.String(), attrs...)
}

// wake makes an idle session give up waiting for a request.
func (s *session) wake() {
	if s.state.CompareAndSwap(stateIdle, stateClosing) {
		s.clk.setHard(time.Now())
		s.raw.SetReadDeadline(time.Now())
	}
}

// refuseHead answers a head that could not be read, when it is worth an
// answer (not a closed or silent connection).
func (s *session) refuseHead(err error) {
	switch {
	case errors.Is(err, errHeadTooLarge):
		s.answer(nil, 431, "Request Header Fields Too Large", err.Error(), true)
		s.refused("request refused", "head_too_large", "status", 431, "err", err.Error())
	case errors.Is(err, errMalformed):
		s.answer(nil, 400, "Bad Request", err.Error(), true)
		s.refused("request refused", "bad_request", "status", 400, "err", err.Error())
	case isTimeout(err) && !s.aborted.Load() && !s.f.draining.Load():
		s.refused("request head timed out", "header_timeout", "timeout", s.f.Config.HeaderTimeout)
	case errors.Is(err, io.EOF), isTimeout(err), errors.Is(err, net.ErrClosed):
	default:
		s.log.Debug("reading request failed", "err", err)
	}
}

// end closes every back-end connection of the session and gives its
// buffers back.
func (s *session) end() {
	s.releaseReader()
	s.releaseWriter()
	for _, u := range s.ups {
		u.close()
	}
	if s.pinned != nil {
		pinnedActive.WithLabelValues(s.f.name()).Dec()
	}
	s.ups = nil
}
