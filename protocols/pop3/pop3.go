// Package pop3 is gatehouse's POP3 frontend: it speaks POP3 to the client
// until the client has logged in, routes the session by user, logs in to
// the chosen back-end with the same credentials, and then splices the two
// connections.
//
// Implementation notes (invariants):
//   - Before login only CAPA, STLS, USER, PASS, AUTH and QUIT are served
//     (RFC 1939 section 4, RFC 2449, RFC 2595 section 4, RFC 5034); any
//     other command gets -ERR and counts against MaxCommands.
//   - Bytes the client pipelined after STLS are discarded, never executed
//     (tls.ServerStartTLS; CVE-2011-0411). Bytes the back-end sent after
//     its STLS go-ahead make gatehouse give up on that back-end.
//   - Before TLS on a listener that requires it, CAPA lists neither USER
//     nor SASL, and every login command is refused.
//   - An unknown user and a wrong password get the same answer after the
//     same throttle delay: the back-end's -ERR, or the lookup's refusal.
//   - A mapped back-end (map or http routing) that is down is a
//     -ERR [SYS/TEMP], never a login elsewhere: another server would show
//     an empty mailbox.
//   - Passwords are never logged; one log line per login attempt.
//   - The splice starts only after the back-end's +OK to the login, which
//     is the line the client receives; bytes either side sent ahead are
//     forwarded first, in order.
//
// The login, routing, back-end dialing and splice are
// protocols/internal/maillogin's, shared with the IMAP frontend.
//
// It may import proxy, tls and protocols/internal (the login flow it
// shares with IMAP), never another protocol package.
package pop3

import (
	"context"
	"net"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/maillogin"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// Frontend serves POP3 clients of one listener. Set the fields before the
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
	// Config holds the POP3 options; zero values mean the defaults.
	Config Config
}

// session is one client connection before and during the splice.
type session struct {
	maillogin.Session
	f   *Frontend
	cfg *Config

	user     string // from USER, until PASS
	commands int    // commands read before login
}

// ServeConn implements proxy.Handler.
func (f *Frontend) ServeConn(ctx context.Context, conn net.Conn) {
	cfg := f.Config
	cfg.SetDefaults()
	s := &session{f: f, cfg: &cfg}
	s.Serve(ctx, conn, &maillogin.Frontend{
		Link: f.Link, Protocol: "pop3", Pool: f.Pool, Router: f.Router, Logins: logins,
		PreauthTimeout: cfg.PreauthTimeout, LoginTimeout: cfg.LoginTimeout, MaxBackendLine: maxBackendLine,
	}, s.preauth)
}

// Refuse implements proxy.Refuser.
func (f *Frontend) Refuse(conn net.Conn, reason string) {
	text := "-ERR [SYS/TEMP] Too many connections, try again later\r\n"
	if reason == "shutdown" {
		text = "-ERR [SYS/TEMP] Server shutting down, try again later\r\n"
	}
	conn.Write([]byte(text))
}
