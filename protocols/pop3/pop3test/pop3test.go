// Package pop3test provides a POP3 server for tests and demos, in the style
// of net/http/httptest: it listens on a loopback port, serves the mailboxes it
// is given, and records who logged in.
//
// It speaks RFC 1939 (USER/PASS, STAT, LIST, UIDL, RETR, TOP, DELE, RSET,
// NOOP, QUIT), RFC 2449 (CAPA and the [AUTH] and [IN-USE] response codes),
// RFC 2595 §4 (STLS) and RFC 5034 (AUTH PLAIN, with and without an initial
// response). APOP is not offered.
//
// Implementation notes:
//   - Option fields are set before Start; Mailboxes is copied by Start, and
//     Messages reports what the mailboxes hold afterwards.
//   - After STLS the server throws away every byte the client sent behind
//     the command before the TLS handshake (RFC 2595 §4 and the 2011 STARTTLS
//     command-injection flaw): such bytes are never executed.
//   - A maildrop is locked from login to the end of the session; a second
//     login to it gets "-ERR [IN-USE]" (RFC 2449 §8.1.2).
//   - DELE takes effect only at QUIT; a connection that ends otherwise
//     deletes nothing (RFC 1939 §6).
//   - Close ends the listener and every live connection, then waits until
//     every connection has been released by the goroutine that served it.
//
// It may import protocols/internal/testserver only.
package pop3test

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	stdtls "crypto/tls"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/testserver"
)

// Server is a POP3 server listening on a loopback address.
type Server struct {
	// Addr is the address the server listens on, "127.0.0.1:port", set by
	// Start or StartOn.
	Addr string
	// Name names the server in its greeting, CAPA IMPLEMENTATION line and log
	// lines, so that a person sees which back-end answered. Empty means
	// "pop3test".
	Name string

	// Mailboxes maps user names to their password and messages. nil means no
	// user can log in.
	Mailboxes map[string]*Mailbox
	// TLSConfig, when set, makes the server offer STLS with it. nil offers no
	// TLS.
	TLSConfig *stdtls.Config
	// AuthTLSOnly refuses USER, PASS and AUTH until STLS has succeeded, and
	// leaves them out of CAPA before then. false allows plaintext logins.
	AuthTLSOnly bool
	// Hang makes the server accept connections and never greet them: the
	// client waits until it gives up or the server is closed.
	Hang bool
	// Logger receives the server's log lines. nil discards them.
	Logger *slog.Logger

	life   testserver.Lifecycle
	mu     sync.Mutex
	boxes  map[string]*box
	logins testserver.Records[Login]
}

// Mailbox is one user's maildrop.
type Mailbox struct {
	// Password is the user's password, for USER/PASS and AUTH PLAIN.
	Password string
	// Messages are the messages in the maildrop, oldest first. Bare LF line
	// endings are served as CRLF.
	Messages [][]byte
}

// Login is a successful login.
type Login struct {
	// User is the name the client logged in as.
	User string
	// RemoteAddr is the client's address: the peer's, or the one a PROXY
	// protocol header declared when the listener given to StartOn reads them.
	RemoteAddr string
	// Mechanism is "USER" for USER/PASS or "PLAIN" for AUTH PLAIN.
	Mechanism string
	// TLS reports whether the login happened inside TLS.
	TLS bool
}

// box is the server's live copy of a Mailbox.
type box struct {
	password string
	msgs     []message
	locked   bool
}

// message is a stored message with CRLF line endings and its unique id.
type message struct {
	uid  string
	data []byte
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

// Start starts the server on 127.0.0.1 on a port chosen by the system. It
// panics if it cannot listen or if the server was already started.
func (s *Server) Start() { s.StartOn(testserver.Listen("pop3test")) }

// StartOn starts the server on ln, which it owns from then on; Addr becomes
// ln's address. ln may be any listener, for example a go-proxyproto one,
// whose declared client addresses then appear in Login.RemoteAddr. StartOn
// panics if the server was already started.
func (s *Server) StartOn(ln net.Listener) {
	tl := s.life.Start("pop3test", ln, s.Hang)
	if s.Name == "" {
		s.Name = "pop3test"
	}
	s.Addr = ln.Addr().String()
	s.mu.Lock()
	s.boxes = copyMailboxes(s.Mailboxes)
	s.mu.Unlock()
	s.life.Serve(func() { s.serve(tl) })
}

// copyMailboxes builds the live store; unique ids number the messages as
// first given, so they stay the same across restarts with the same data.
func copyMailboxes(in map[string]*Mailbox) map[string]*box {
	out := make(map[string]*box, len(in))
	for user, mb := range in {
		b := &box{password: mb.Password}
		for i, data := range mb.Messages {
			b.msgs = append(b.msgs, message{uid: fmt.Sprintf("%08d", i+1), data: testserver.CRLF(data)})
		}
		out[user] = b
	}
	return out
}

func (s *Server) logger() *slog.Logger { return testserver.Logger(s.Logger) }

// serve accepts connections until the listener is closed.
func (s *Server) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.logger().Error("pop3test: accept failed; no longer serving", "backend", s.Name, "err", err)
			}
			return
		}
		go s.handle(c)
	}
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	newSession(s, c).serve()
}

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

// Messages returns a copy of what user's maildrop holds now, with CRLF line
// endings, or nil for an unknown user.
func (s *Server) Messages(user string) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.boxes[user]
	if b == nil {
		return nil
	}
	out := make([][]byte, len(b.msgs))
	for i, m := range b.msgs {
		out[i] = bytes.Clone(m.data)
	}
	return out
}

func (s *Server) recordLogin(l Login) { s.logins.Add(l) }

// checkPassword reports whether user exists and pass is its password.
func (s *Server) checkPassword(user, pass string) bool {
	s.mu.Lock()
	b := s.boxes[user]
	s.mu.Unlock()
	return b != nil && subtle.ConstantTimeCompare([]byte(b.password), []byte(pass)) == 1
}
