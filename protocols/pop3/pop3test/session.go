package pop3test

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"

	stdtls "crypto/tls"
)

const (
	// maxLine bounds a command line; RFC 2449 §4 allows 255 octets, and an
	// AUTH PLAIN line with long credentials stays well under this.
	maxLine = 4096
	// idleTimeout is RFC 1939 §3's minimum autologout timer.
	idleTimeout = 10 * time.Minute
	// handshakeTimeout bounds the TLS handshake after STLS.
	handshakeTimeout = 30 * time.Second
	// maxErrors is how many bad commands end a session, so that a client of
	// another protocol talking to this port is sent away.
	maxErrors = 10
)

var errLineTooLong = errors.New("pop3test: command line too long")

// session is one client connection, from greeting to close.
type session struct {
	srv    *Server
	raw    net.Conn // the socket
	conn   net.Conn // raw, or TLS over it after STLS
	r      *bufio.Reader
	w      *bufio.Writer
	log    *slog.Logger
	remote string
	tls    bool

	user   string    // argument of USER, waiting for PASS
	drop   *maildrop // non-nil in the TRANSACTION state
	errors int
	done   bool
}

func newSession(srv *Server, c net.Conn) *session {
	remote := c.RemoteAddr().String()
	return &session{
		srv:    srv,
		raw:    c,
		conn:   c,
		r:      bufio.NewReaderSize(c, maxLine),
		w:      bufio.NewWriter(c),
		log:    srv.logger().With("proto", "pop3", "backend", srv.Name, "client", remote),
		remote: remote,
	}
}

// serve greets the client and answers its commands until QUIT, an error, or
// the end of the connection.
func (s *session) serve() {
	defer func() { _ = s.conn.Close() }() // inside TLS this sends close_notify
	defer s.unlock()
	defer s.recoverPanic() // runs first, while the connection is still open
	s.log.Debug("pop3test: session start")
	s.reply("+OK %s POP3 ready", s.srv.Name)
	for !s.done {
		line, err := s.readLine()
		if err != nil {
			s.readFailed(err)
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		s.dispatch(strings.ToUpper(verb), arg)
	}
}

// readFailed says goodbye in POP3 where that still makes sense.
func (s *session) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errLineTooLong):
		s.reply("-ERR line too long")
	case errors.As(err, &ne) && ne.Timeout():
		s.reply("-ERR autologout; idle for too long")
	}
	s.log.Debug("pop3test: session end", "err", err)
}

func (s *session) recoverPanic() {
	if v := recover(); v != nil {
		s.log.Error("pop3test: panic in session", "panic", v, "stack", string(debug.Stack()))
		s.reply("-ERR internal server error")
	}
}

// readLine reads one command line without its CRLF.
func (s *session) readLine() (string, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(idleTimeout))
	line, err := s.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", errLineTooLong
	}
	if err != nil {
		return "", fmt.Errorf("pop3test: reading command: %w", err)
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// reply writes one response line and flushes it.
func (s *session) reply(format string, args ...any) {
	fmt.Fprintf(s.w, format+"\r\n", args...)
	s.flush()
}

func (s *session) flush() {
	if err := s.w.Flush(); err != nil {
		s.log.Debug("pop3test: write failed", "err", err)
		s.done = true
	}
}

// fail answers a command with -ERR and ends the session after too many.
func (s *session) fail(format string, args ...any) {
	s.errors++
	if s.errors >= maxErrors {
		s.reply("-ERR too many bad commands, closing")
		s.done = true
		return
	}
	s.reply("-ERR "+format, args...)
}

func (s *session) dispatch(verb, arg string) {
	switch verb {
	case "QUIT":
		s.quit()
	case "CAPA":
		s.capa()
	default:
		if s.drop == nil {
			s.authorization(verb, arg)
		} else {
			s.transaction(verb, arg)
		}
	}
}

// authorization answers the commands of RFC 1939 §4's AUTHORIZATION state.
func (s *session) authorization(verb, arg string) {
	if (verb == "USER" || verb == "PASS" || verb == "AUTH") && !s.authAllowed() {
		s.fail("[AUTH] Plaintext authentication disallowed on non-secure connections; use STLS")
		return
	}
	switch verb {
	case "USER":
		s.cmdUser(arg)
	case "PASS":
		s.cmdPass(arg)
	case "AUTH":
		s.cmdAuth(arg)
	case "STLS":
		s.cmdSTLS()
	case "APOP":
		s.fail("APOP not supported")
	default:
		s.fail("unknown command in AUTHORIZATION state")
	}
}

func (s *session) authAllowed() bool { return s.tls || !s.srv.AuthTLSOnly }

// capa lists the capabilities of the current state (RFC 2449 §5).
func (s *session) capa() {
	caps := []string{"TOP", "UIDL", "RESP-CODES", "PIPELINING"}
	if s.drop == nil && s.authAllowed() {
		caps = append(caps, "USER", "SASL PLAIN")
	}
	if s.drop == nil && s.srv.TLSConfig != nil && !s.tls {
		caps = append(caps, "STLS")
	}
	caps = append(caps, "IMPLEMENTATION "+s.srv.Name)
	fmt.Fprintf(s.w, "+OK Capability list follows\r\n%s\r\n.\r\n", strings.Join(caps, "\r\n"))
	s.flush()
}

func (s *session) cmdUser(arg string) {
	if arg == "" {
		s.fail("USER needs a name")
		return
	}
	s.user = arg
	s.reply("+OK send PASS")
}

// cmdPass takes the rest of the line as the password: it may hold spaces.
func (s *session) cmdPass(arg string) {
	user := s.user
	s.user = ""
	switch {
	case user == "":
		s.fail("USER first")
	case !s.srv.checkPassword(user, arg):
		s.log.Info("pop3test: login failed", "user", user)
		s.fail("[AUTH] invalid user name or password")
	default:
		s.open(user, "USER")
	}
}

// cmdSTLS switches to TLS (RFC 2595 §4). Whatever the client pipelined
// behind STLS is still in the plaintext reader and is thrown away with it.
func (s *session) cmdSTLS() {
	switch {
	case s.srv.TLSConfig == nil:
		s.fail("STLS not supported")
		return
	case s.tls:
		s.fail("command not permitted when TLS active")
		return
	}
	s.reply("+OK Begin TLS negotiation")
	if s.done {
		return
	}
	if n := s.r.Buffered(); n > 0 {
		s.log.Warn("pop3test: discarding plaintext sent after STLS", "bytes", n)
	}
	tc := stdtls.Server(s.raw, s.srv.TLSConfig)
	_ = tc.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		s.log.Info("pop3test: TLS handshake failed", "err", err)
		s.done = true
		return
	}
	_ = tc.SetDeadline(time.Time{})
	s.conn, s.tls, s.user = tc, true, ""
	s.r = bufio.NewReaderSize(tc, maxLine)
	s.w = bufio.NewWriter(tc)
}

// open enters the TRANSACTION state for user after a successful login.
func (s *session) open(user, mech string) {
	drop, ok := s.srv.lock(user)
	if !ok {
		s.fail("[IN-USE] maildrop already locked")
		return
	}
	s.drop = drop
	s.srv.recordLogin(Login{User: user, RemoteAddr: s.remote, Mechanism: mech, TLS: s.tls})
	s.log.Info("pop3test: logged in", "user", user, "mech", mech, "tls", s.tls)
	n, size := drop.stat()
	s.reply("+OK %s: %s has %d messages (%d octets)", s.srv.Name, user, n, size)
}

// quit ends the session; in the TRANSACTION state it first enters the
// UPDATE state and removes the messages marked deleted (RFC 1939 §6).
func (s *session) quit() {
	s.done = true
	if s.drop == nil {
		s.reply("+OK %s POP3 server signing off", s.srv.Name)
		return
	}
	left := s.srv.commit(s.drop)
	s.drop = nil
	s.reply("+OK %s POP3 server signing off (%d messages left)", s.srv.Name, left)
}

// unlock releases the maildrop of a session that ended without QUIT; its
// deletions are forgotten.
func (s *session) unlock() {
	if s.drop != nil {
		s.srv.release(s.drop.user)
		s.drop = nil
	}
}
