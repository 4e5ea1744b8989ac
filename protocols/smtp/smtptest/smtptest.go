// Package smtptest provides an SMTP server for tests and demos, in the style
// of net/http/httptest: it listens on a loopback port, records every message
// it accepts, and can be told to fail the ways a real back-end fails.
//
// The server is github.com/emersion/go-smtp's, so what a client meets is real
// SMTP: the greeting "220 <Name> ESMTP Service Ready", EHLO with PIPELINING,
// 8BITMIME, SIZE, STARTTLS when TLSConfig is set, AUTH PLAIN when AuthUsers
// is set. go-smtp only parses four-letter verbs, so XCLIENT and XFORWARD are
// refused with a 5xx reply; to test forwarding of the client address, start
// the server on a PROXY-protocol listener (see StartOn).
//
// Implementation notes:
//   - Option fields are set before Start; sessions read them while the server
//     runs, so changing them afterwards is a data race.
//   - A message is recorded only when the server answered its DATA with 2xx,
//     so a recorded message is one the client was told was delivered.
//   - A 421 reply (EHLOReject or DataReply) is followed by closing the
//     connection, as RFC 5321 §3.8 asks of a server that shuts a session.
//   - Close ends the listener and every live connection, then waits for all
//     of the server's goroutines.
//
// It may import protocols/internal/testserver and go-smtp.
package smtptest

import (
	"context"
	"log/slog"
	"net"

	stdtls "crypto/tls"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/testserver"

	gosmtp "github.com/emersion/go-smtp"
)

// Server is an SMTP server listening on a loopback address.
type Server struct {
	// Addr is the address the server listens on, "127.0.0.1:port", set by
	// Start or StartOn.
	Addr string
	// Name names the server in its greeting and log lines, so that a person
	// sees which back-end answered. Empty means "smtptest".
	Name string

	// Hang makes the server accept connections and never greet them: the
	// client waits until it gives up or the server is closed.
	Hang bool
	// EHLOReject, when set, is the reply to every HELO and EHLO (for example
	// 421 4.3.2 or 554 5.7.1). nil accepts EHLO.
	EHLOReject *gosmtp.SMTPError
	// DataReply, when set, is the reply at the end of DATA instead of
	// "250 2.0.0 OK: queued" (for example 452 4.3.1 or 550 5.7.1). A 2xx
	// DataReply still records the message. nil accepts every message.
	DataReply *gosmtp.SMTPError
	// DropAfterData makes the server read the whole message and then close
	// the connection without a reply; the message is not recorded.
	DropAfterData bool
	// TLSConfig, when set, makes the server offer STARTTLS with it. nil
	// offers no TLS.
	TLSConfig *stdtls.Config
	// AuthUsers, when set, makes the server offer AUTH PLAIN and accept these
	// user names and passwords. nil offers no AUTH. Authentication is never
	// required to send mail; Message.User tells who authenticated.
	AuthUsers map[string]string
	// AuthTLSOnly offers AUTH only inside TLS (after STARTTLS). false offers
	// it on plaintext connections too.
	AuthTLSOnly bool
	// MaxMessageBytes is the largest message accepted, advertised in SIZE;
	// larger ones get 552 5.3.4. 0 means no limit.
	MaxMessageBytes int64
	// Logger receives the server's log lines. nil discards them.
	Logger *slog.Logger

	life     testserver.Lifecycle
	srv      *gosmtp.Server // go-smtp's server, set once by StartOn
	messages testserver.Records[Message]
}

// Message is a message the server accepted.
type Message struct {
	// From is the reverse path given in MAIL FROM.
	From string
	// To holds the forward paths given in RCPT TO, in order.
	To []string
	// Data is the message as received, with line endings as sent and the
	// final "." line removed.
	Data []byte
	// Helo is the name the client gave in HELO or EHLO.
	Helo string
	// User is the name the client authenticated as; empty without AUTH.
	User string
	// RemoteAddr is the client's address: the peer's, or the one a PROXY
	// protocol header declared when the listener given to StartOn reads them.
	RemoteAddr string
	// TLS reports whether the message came inside TLS.
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

// Start starts the server on 127.0.0.1 on a port chosen by the system. It
// panics if it cannot listen or if the server was already started.
func (s *Server) Start() { s.StartOn(testserver.Listen("smtptest")) }

// StartOn starts the server on ln, which it owns from then on; Addr becomes
// ln's address. ln may be any listener, for example a go-proxyproto one,
// whose declared client addresses then appear in Message.RemoteAddr. Direct
// TLS (a crypto/tls listener) is not supported: go-smtp would not see it.
// StartOn panics if the server was already started.
func (s *Server) StartOn(ln net.Listener) {
	tl := s.life.Start("smtptest", ln, s.Hang)
	if s.Name == "" {
		s.Name = "smtptest"
	}
	s.Addr = ln.Addr().String()
	tl.Wrap = wrapConn
	srv := s.newGoSMTP()
	s.srv = srv
	s.life.Serve(func() {
		err := srv.Serve(tl)
		s.logger().Debug("smtptest: stopped accepting", "backend", s.Name, "err", err)
	})
}

// newGoSMTP builds the go-smtp server from the option fields.
func (s *Server) newGoSMTP() *gosmtp.Server {
	srv := gosmtp.NewServer(&backend{srv: s, log: s.logger()})
	srv.Domain = s.Name
	srv.TLSConfig = s.TLSConfig
	srv.MaxMessageBytes = s.MaxMessageBytes
	srv.AllowInsecureAuth = !s.AuthTLSOnly
	srv.ErrorLog = slog.NewLogLogger(s.logger().Handler(), slog.LevelDebug)
	return srv
}

func (s *Server) logger() *slog.Logger { return testserver.Logger(s.Logger) }

// Close stops the listener, closes every live connection, and waits until
// all of the server's goroutines have ended. It may be called more than once,
// and on a server that never started.
func (s *Server) Close() {
	s.life.Close() // go-smtp accepts no more, and every connection is closed
	if s.srv != nil {
		_ = s.srv.Shutdown(context.Background()) // waits for go-smtp's handlers
	}
}

// Messages returns a copy of the messages accepted so far, oldest first.
func (s *Server) Messages() []Message { return s.messages.All() }

// Sessions reports how many connections the server has accepted, including
// those it left hanging.
func (s *Server) Sessions() int { return s.life.Sessions() }

func (s *Server) record(m Message) { s.messages.Add(m) }
