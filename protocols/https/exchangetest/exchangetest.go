// Package exchangetest provides an HTTP server that looks like a Microsoft
// Exchange front-end (Client Access) server in its simplest parts, for tests
// and demos, in the style of net/http/httptest (on which it is built).
//
// What it does:
//   - Every response carries "X-Backend: <Name>", so a person or a test sees
//     which back-end answered.
//   - GET /<vdir>/healthcheck.htm answers 200 with the body
//     "200 OK<br/><Name>", as Exchange 2013+ Managed Availability does, for
//     each virtual directory in VirtualDirectories; the path is matched
//     without regard to case. SetDown makes one virtual directory answer 503,
//     as Exchange does when that protocol's component is inactive.
//   - GET /owa/ serves a small HTML page naming the back-end.
//   - Any other path answers 200 with a short text naming the back-end and
//     the request path.
//   - With Users set, EWS, RPC and MAPI ask for a login as IIS does: NTLM
//     (or Negotiate carrying NTLM) whose challenge holds only on the TCP
//     connection that received it and whose login then covers that
//     connection, or Basic; answers name the user (X-User). NTLMNegotiate
//     and NTLMAuthenticate are the client side, for tests.
//   - RPC_IN_DATA and RPC_OUT_DATA on /rpc/rpcproxy.dll open RPC over HTTP
//     channels ([MS-RPCH]): the first PDU (CONN/A1, CONN/B1, IN_R1/A1,
//     OUT_R1/A3) is parsed and its virtual connection cookie recorded
//     (Channels); bytes sent on an IN channel come back on the OUT channel
//     of the same cookie; 0 to 16-byte bodies get the echo response.
//   - An ActiveSync Ping is held for its HeartbeatInterval (or PingHold)
//     and answered with Status 1 (HeldPings counts them).
//   - With FormsAuth, OWA asks for a forms login whose session cookie only
//     this server accepts, as Exchange 2010 did.
//
// Start serves plain HTTP; StartTLS serves HTTPS with a self-signed
// certificate generated when the server starts (see Certificate and Client).
//
// It imports no gatehouse package: tests and the demo use it as a
// stand-in for Exchange.
package exchangetest

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	stdtls "crypto/tls"
)

// Server is an Exchange-like HTTP or HTTPS server on a loopback address.
type Server struct {
	// Addr is the address the server listens on, "127.0.0.1:port", set when
	// it starts.
	Addr string
	// URL is the base URL, "http://127.0.0.1:port" or "https://…", set when
	// the server starts.
	URL string
	// Name names the server in the X-Backend header, in health-check bodies
	// and pages, and in log lines. Empty means "exchangetest".
	Name string
	// Logger receives the server's log lines. nil discards them.
	Logger *slog.Logger
	// Users, when set, makes EWS, RPC and MAPI ask for a login as
	// Exchange's Windows authentication does: NTLM (or Negotiate carrying
	// NTLM) whose challenge holds only on the TCP connection that received
	// it and whose login then covers that connection, or Basic on each
	// request. It maps user to password (see DemoUsers). Responses to
	// logged-in requests name the user in X-User and in the body. nil asks
	// no login.
	Users map[string]string
	// FormsAuth makes /owa/ ask for a forms login (users from Users, or
	// DemoUsers when nil), kept in a session cookie that only this server
	// accepts. False serves the OWA page without login.
	FormsAuth bool
	// PingHold is how long an ActiveSync Ping is held when its body names
	// no HeartbeatInterval; 0 means 10 seconds.
	PingHold time.Duration

	channels   []Channel
	vconns     map[[16]byte]*vconn
	held       int
	conns      int
	sessionKey []byte

	mu       sync.Mutex
	started  bool
	closed   bool
	down     map[string]bool // lower-case virtual directory names
	requests int
	ts       *httptest.Server
}

// NewServer returns a server named name, serving plain HTTP on 127.0.0.1:0.
func NewServer(name string) *Server {
	s := NewUnstartedServer(name)
	s.Start()
	return s
}

// NewTLSServer returns a server named name, serving HTTPS on 127.0.0.1:0
// with a fresh self-signed certificate.
func NewTLSServer(name string) *Server {
	s := NewUnstartedServer(name)
	s.StartTLS()
	return s
}

// NewUnstartedServer returns a server named name that is not yet listening;
// call Start, StartTLS, StartOn or StartTLSOn.
func NewUnstartedServer(name string) *Server {
	return &Server{Name: name}
}

// Start serves plain HTTP on 127.0.0.1 on a port chosen by the system. It
// panics if it cannot listen or if the server was already started.
func (s *Server) Start() { s.StartOn(listenLoopback()) }

// StartTLS serves HTTPS on 127.0.0.1 on a port chosen by the system. It
// panics if it cannot listen or if the server was already started.
func (s *Server) StartTLS() { s.StartTLSOn(listenLoopback()) }

// StartOn serves plain HTTP on ln, which the server owns from then on. It
// panics if the server was already started.
func (s *Server) StartOn(ln net.Listener) { s.start(ln, false) }

// StartTLSOn serves HTTPS on ln, which the server owns from then on, with a
// self-signed certificate for the Name, localhost, and ln's loopback
// address. It panics if the server was already started or the certificate
// cannot be made.
func (s *Server) StartTLSOn(ln net.Listener) { s.start(ln, true) }

func listenLoopback() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("exchangetest: listen on 127.0.0.1:0: %v", err))
	}
	return ln
}

func (s *Server) start(ln net.Listener, useTLS bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		panic("exchangetest: server already started")
	}
	s.started = true
	if s.Name == "" {
		s.Name = "exchangetest"
	}
	ts := &httptest.Server{Listener: ln, Config: &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 30 * time.Second,
		ConnContext:       s.connContext,
		ErrorLog:          slog.NewLogLogger(s.logger().Handler(), slog.LevelDebug),
	}}
	if useTLS {
		cert, err := selfSigned(s.Name, ln.Addr())
		if err != nil {
			panic(fmt.Sprintf("exchangetest: %v", err))
		}
		ts.TLS = &stdtls.Config{Certificates: []stdtls.Certificate{cert}}
		ts.StartTLS()
	} else {
		ts.Start()
	}
	s.ts, s.Addr, s.URL = ts, ln.Addr().String(), ts.URL
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Close stops the listener, closes every connection, idle or busy, and waits
// until every request handler has returned. It may be called more than once,
// and on a server that never started.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.started || s.closed {
		s.closed = true
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()

	_ = s.ts.Listener.Close()
	s.ts.CloseClientConnections() // busy ones too: httptest's Close waits for those
	s.ts.Close()
}

// Certificate returns the server's self-signed certificate, or nil when it
// serves plain HTTP or has not started.
func (s *Server) Certificate() *x509.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ts == nil || s.ts.TLS == nil {
		return nil
	}
	return s.ts.Certificate()
}

// Client returns an HTTP client for the server: over HTTPS it trusts the
// server's certificate. It returns nil before the server starts.
func (s *Server) Client() *http.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ts == nil {
		return nil
	}
	return s.ts.Client()
}

// SetDown makes GET /<vdir>/healthcheck.htm answer 503 while down is true,
// and 200 again when it is false. vdir is matched without regard to case.
// It is safe to call while the server runs.
func (s *Server) SetDown(vdir string, down bool) {
	key := normalizeVdir(vdir)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down == nil {
		s.down = make(map[string]bool)
	}
	if down {
		s.down[key] = true
	} else {
		delete(s.down, key)
	}
}

// Requests reports how many HTTP requests the server has answered or is
// answering.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}
