// Package imaptest provides an IMAP server for tests and demos, in the style
// of net/http/httptest: it listens on a loopback port, serves users whose
// INBOX holds the messages they were given, and records who logged in.
//
// The server is github.com/emersion/go-imap/v2's imapserver with its
// in-memory back-end, imapmemserver, so what a client meets is real IMAP4rev1
// and IMAP4rev2: LOGIN, AUTHENTICATE PLAIN (with SASL-IR), SELECT, FETCH,
// SEARCH, STORE, IDLE and the rest, STARTTLS when TLSConfig is set.
//
// Implementation notes:
//   - go-imap (v2.0.0-beta.8) writes a fixed greeting text, "IMAP server
//     ready", has no ID command, and advertises only the capabilities it
//     implements, so none of those can carry the server's name. The server
//     therefore names itself by rewriting that text as the greeting leaves:
//     "* OK [CAPABILITY ...] <Name> IMAP server ready". Nothing else on the
//     wire is touched.
//   - go-imap answers a command it does not know with BAD and, before login,
//     closes the connection. That includes ID (RFC 2971), so this server
//     cannot stand in for a Dovecot that takes client addresses through ID.
//   - Option fields are set before Start; sessions read them while the server
//     runs, so changing them afterwards is a data race. AddUser may be called
//     at any time.
//   - Close ends the listener and every live connection, then waits until
//     every connection has been released by the goroutine that served it.
//
// It may import protocols/internal/testserver only.
package imaptest

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"sync"

	stdtls "crypto/tls"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/testserver"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// Server is an IMAP server listening on a loopback address.
type Server struct {
	// Addr is the address the server listens on, "127.0.0.1:port", set by
	// Start or StartOn.
	Addr string
	// Name names the server in its greeting and log lines, so that a person
	// sees which back-end answered. Empty means "imaptest".
	Name string

	// TLSConfig, when set, makes the server offer STARTTLS with it. nil
	// offers no TLS.
	TLSConfig *stdtls.Config
	// AuthTLSOnly refuses LOGIN and AUTHENTICATE until STARTTLS has
	// succeeded, and advertises LOGINDISABLED before then. false allows
	// plaintext logins.
	AuthTLSOnly bool
	// Hang makes the server accept connections and never greet them: the
	// client waits until it gives up or the server is closed.
	Hang bool
	// Logger receives the server's log lines. nil discards them.
	Logger *slog.Logger

	life   testserver.Lifecycle
	mu     sync.Mutex
	users  map[string]*imapmemserver.User
	logins testserver.Records[Login]
}

// Login is a successful login, by LOGIN or AUTHENTICATE PLAIN.
type Login struct {
	// User is the name the client logged in as.
	User string
	// RemoteAddr is the client's address: the peer's, or the one a PROXY
	// protocol header declared when the listener given to StartOn reads them.
	RemoteAddr string
	// TLS reports whether the login happened inside TLS.
	TLS bool
}

// NewServer returns a server named name, started on 127.0.0.1:0.
func NewServer(name string) *Server {
	s := NewUnstartedServer(name)
	s.Start()
	return s
}

// NewUnstartedServer returns a server named name that is not yet listening;
// set its option fields, then call Start or StartOn.
func NewUnstartedServer(name string) *Server {
	return &Server{Name: name}
}

// AddUser adds a user, or replaces one of the same name, whose INBOX holds
// messages, oldest first. Bare LF line endings are stored as CRLF.
func (s *Server) AddUser(name, password string, messages ...[]byte) {
	u := imapmemserver.NewUser(name, password)
	if err := u.Create("INBOX", nil); err != nil {
		panic(fmt.Sprintf("imaptest: creating INBOX for %s: %v", name, err)) // a fresh user has no INBOX yet
	}
	for _, m := range messages {
		if _, err := u.Append("INBOX", bytes.NewReader(testserver.CRLF(m)), &imap.AppendOptions{}); err != nil {
			panic(fmt.Sprintf("imaptest: appending to %s's INBOX: %v", name, err))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users == nil {
		s.users = make(map[string]*imapmemserver.User)
	}
	s.users[name] = u
}

// Start starts the server on 127.0.0.1 on a port chosen by the system. It
// panics if it cannot listen or if the server was already started.
func (s *Server) Start() { s.StartOn(testserver.Listen("imaptest")) }

// StartOn starts the server on ln, which it owns from then on; Addr becomes
// ln's address. ln may be any listener, for example a go-proxyproto one,
// whose declared client addresses then appear in Login.RemoteAddr. Direct
// TLS (a crypto/tls listener) is not supported. StartOn panics if the server
// was already started.
func (s *Server) StartOn(ln net.Listener) {
	tl := s.life.Start("imaptest", ln, s.Hang)
	if s.Name == "" {
		s.Name = "imaptest"
	}
	s.Addr = ln.Addr().String()
	tl.Wrap = namedGreeting(s.Name)
	srv := imapserver.New(&imapserver.Options{
		NewSession:   s.newSession,
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		Logger:       slog.NewLogLogger(s.logger().Handler(), slog.LevelDebug),
		TLSConfig:    s.TLSConfig,
		InsecureAuth: !s.AuthTLSOnly,
	})
	s.life.Serve(func() {
		err := srv.Serve(tl)
		s.logger().Debug("imaptest: stopped accepting", "backend", s.Name, "err", err)
	})
}

func (s *Server) logger() *slog.Logger { return testserver.Logger(s.Logger) }

// Close stops the listener, closes every live connection, and waits until
// each has been released by the goroutine that served it. It may be called
// more than once, and on a server that never started.
func (s *Server) Close() { s.life.Close() }

// Sessions reports how many connections the server has accepted, including
// those it left hanging.
func (s *Server) Sessions() int { return s.life.Sessions() }

// Logins returns the user names of the successful logins so far, oldest
// first.
func (s *Server) Logins() []string {
	return testserver.Map(&s.logins, func(l Login) string { return l.User })
}

// LoginRecords returns the successful logins so far with their client
// addresses, oldest first.
func (s *Server) LoginRecords() []Login { return s.logins.All() }

func (s *Server) user(name string) *imapmemserver.User {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.users[name]
}

func (s *Server) recordLogin(l Login) { s.logins.Add(l) }
