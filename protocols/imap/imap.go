// Package imap is gatehouse's IMAP frontend: it speaks IMAP to the client
// until the client has logged in, routes the session by user, logs in to
// the chosen back-end with the same credentials, and then splices the two
// connections.
//
// Pre-auth parsing is written here rather than taken from
// github.com/emersion/go-imap/v2: its wire parser (internal/imapwire) cannot
// be imported, and imapserver is a whole server that keeps reading through
// its own buffer, with no hand-over of the raw connection after LOGIN.
//
// Implementation notes (invariants):
//   - Before login only CAPABILITY, NOOP, LOGOUT, STARTTLS, ID, LOGIN and
//     AUTHENTICATE are served (RFC 9051 section 6.1-6.2, RFC 2971); any
//     other command gets a tagged BAD and counts against MaxCommands.
//   - Literals are read whole before the command runs; a synchronizing
//     literal is invited by "+" only if it fits MaxLiteral (RFC 9051
//     section 4.3), and a non-synchronizing one that does not fit ends the
//     session (RFC 7888 section 4).
//   - Bytes the client pipelined after STARTTLS are discarded, never
//     executed (tls.ServerStartTLS; CVE-2011-0411). Bytes the back-end sent
//     after its STARTTLS go-ahead make gatehouse give up on that back-end.
//   - Before TLS on a listener that requires it, LOGINDISABLED is
//     advertised, no AUTH= is, and LOGIN and AUTHENTICATE are refused.
//   - The client's tags are kept: the back-end sees gatehouse's own, and
//     its tagged answer to LOGIN goes back under the client's tag with the
//     back-end's own response code (its post-login CAPABILITY).
//   - The client's ID is forwarded without x- fields: only gatehouse may
//     tell Dovecot the client's address.
//   - An unknown user and a wrong password get the same answer after the
//     same throttle delay. A mapped back-end that is down is
//     NO [UNAVAILABLE], never a login elsewhere.
//   - Passwords are never logged; one log line per login attempt.
//
// The login, routing, back-end dialing and splice are
// protocols/internal/maillogin's, shared with the POP3 frontend.
//
// It may import proxy, tls and protocols/internal (the login flow it
// shares with POP3), never another protocol package.
package imap

import (
	"bufio"
	"context"
	"net"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/maillogin"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// Frontend serves IMAP clients of one listener. Set the fields before the
// first connection; a Frontend is safe for concurrent use.
type Frontend struct {
	// Link is how the listener reaches clients and back-ends (TLS modes:
	// implicit is 995/993, starttls offers STLS/STARTTLS), its idle
	// limit, throttle and logger; the logger gets one line per login and
	// per session.
	proxy.Link
	// Pool holds the back-ends; required.
	Pool *proxy.Pool
	// Router picks the back-end for a user; nil means rendezvous hashing
	// on the user over Pool.
	Router proxy.Router
	// Config holds the IMAP options; zero values mean the defaults.
	Config Config
}

// session is one client connection before and during the splice.
type session struct {
	maillogin.Session
	f   *Frontend
	cfg *Config

	p        *parser
	id       []idField // the client's ID, forwarded to the back-end
	commands int       // commands read before login
}

// ServeConn implements proxy.Handler.
func (f *Frontend) ServeConn(ctx context.Context, conn net.Conn) {
	cfg := f.Config
	cfg.SetDefaults()
	s := &session{f: f, cfg: &cfg}
	s.Serve(ctx, conn, &maillogin.Frontend{
		Link: f.Link, Protocol: "imap", Pool: f.Pool, Router: f.Router, Logins: logins,
		PreauthTimeout: cfg.PreauthTimeout, LoginTimeout: cfg.LoginTimeout, MaxBackendLine: maxBackendLine,
		Goodbye: "* BYE [UNAVAILABLE] This server is being taken out of service, please reconnect\r\n",
	}, s.preauth)
}

// Refuse implements proxy.Refuser.
func (f *Frontend) Refuse(conn net.Conn, reason string) {
	text := "* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
	if reason == "shutdown" {
		text = "* BYE [UNAVAILABLE] Server shutting down, try again later\r\n"
	}
	conn.Write([]byte(text))
}

// setReader reads commands from the current connection.
func (s *session) setReader() {
	s.R = bufio.NewReaderSize(s.Conn, s.cfg.MaxLine)
	s.p = &parser{r: s.R, maxLiteral: s.cfg.MaxLiteral, ready: func() error {
		return s.Reply("+ Ready for literal data") // RFC 9051 section 7.5
	}}
}
