// Package maillogin is what gatehouse's POP3 and IMAP frontends share: a
// session that logs the client in at the edge, routes it by user, dials a
// back-end and logs in there with the same credentials, then splices the
// two connections; and the server side of the SASL PLAIN and LOGIN
// mechanisms, which go-sasl offers for LOGIN only as a client.
//
// The frontends keep everything that is said in their protocol: they read
// and answer the client's commands, pass Login the replies for each
// outcome, and run their half of the back-end conversation.
//
// Implementation notes (invariants):
//   - An unknown user and a wrong password get the same answer after the
//     same throttle delay: the back-end's refusal, or the lookup's.
//   - A route lookup that fails, or a back-end that refuses for a reason
//     other than the credentials, is a temporary answer, never a login
//     elsewhere.
//   - Passwords are never logged; one log line per login attempt and one
//     per session.
//   - The splice starts only after the back-end's answer to the login has
//     been relayed; bytes either side sent ahead are forwarded first, in
//     order.
//
// It may import proxy and tls; only the pop3 and imap packages import it.
package maillogin

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// Frontend is what the shared session code reads of a POP3 or IMAP
// frontend and its listener. It is not changed once sessions use it.
type Frontend struct {
	// Link is the listener's: TLS both ways (TLSImplicit towards clients
	// is TLS from the first byte), PROXY version, idle limit of the
	// splice, throttle (nil: none) and logger (one line per login and per
	// session).
	proxy.Link
	// Protocol is "pop3" or "imap": the route query's protocol and the
	// logs' "proto".
	Protocol string
	// Pool holds the back-ends; required.
	Pool *proxy.Pool
	// Router picks the back-end for a user; nil means rendezvous hashing
	// on the user over Pool.
	Router proxy.Router
	// Logins counts login attempts by listener, mechanism and outcome.
	Logins *prometheus.CounterVec
	// PreauthTimeout bounds the conversation before login, TLS handshake
	// included.
	PreauthTimeout time.Duration
	// LoginTimeout bounds the back-end's side of the login.
	LoginTimeout time.Duration
	// MaxBackendLine bounds a back-end's reply line before the splice.
	MaxBackendLine int
	// Goodbye is written to the client when a spliced session is ended
	// from outside (a back-end disabled by an operator, or removed by a
	// reload), before the connection closes: IMAP's untagged BYE. Empty
	// means the connection just closes (POP3 has no unsolicited reply).
	Goodbye string
}

func (f *Frontend) log() *slog.Logger { return f.Logger() }

func (f *Frontend) router() proxy.Router {
	if f.Router != nil {
		return f.Router
	}
	return &proxy.HashRouter{Pool: f.Pool}
}

func (f *Frontend) count(mech, outcome string) {
	f.Logins.WithLabelValues(f.Pool.Name, mech, outcome).Inc()
}

// Session is one client connection before and during the splice. A
// frontend's own session embeds it and reads and replaces its fields as
// its protocol requires (STARTTLS replaces Conn, sets TLS and R).
type Session struct {
	Ctx      context.Context
	Raw      net.Conn       // the client's socket
	Conn     net.Conn       // Raw, or TLS over it
	R        *bufio.Reader  // reads Conn; set by the frontend
	TLS      bool           // Conn is TLS
	Client   netip.AddrPort // the client's address
	Log      *slog.Logger   // the session's logger
	Draining atomic.Bool    // the server is shutting down or closed

	f        *Frontend
	attempts int // logins tried
}

// Serve runs one client connection of f: the pre-auth deadline, the TLS
// handshake when f has implicit TLS, preauth (the frontend's conversation
// up to a login that hands off a back-end, or nil), and then the splice.
// A graceful shutdown or a Close wakes a pre-auth read with Draining set.
func (s *Session) Serve(ctx context.Context, conn net.Conn, f *Frontend, preauth func() *Handoff) {
	s.f, s.Ctx, s.Raw, s.Conn, s.Client = f, ctx, conn, conn, AddrPort(conn.RemoteAddr())
	s.Log = f.log().With("proto", f.Protocol, "listener", f.Pool.Name, "client", s.Client.String())
	conn.SetDeadline(time.Now().Add(f.PreauthTimeout))
	if f.TLSMode == proxy.TLSImplicit {
		tc, err := tls.ServerHandshake(conn, f.EdgeTLS)
		if err != nil {
			s.Log.Info("session", "outcome", "tls_failed", "err", err)
			return
		}
		s.Conn, s.TLS = tc, true
	}
	stop := s.watchShutdown()
	h := preauth()
	stop()
	if h != nil {
		s.splice(h)
	}
}

// watchShutdown wakes a pre-auth read when the server starts a graceful
// shutdown or is closed, so the client is told goodbye in its protocol.
// The returned function stops the watch and returns once it has stopped.
func (s *Session) watchShutdown() (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-proxy.ShuttingDown(s.Ctx):
		case <-s.Ctx.Done():
		case <-done:
			return
		}
		s.Draining.Store(true)
		s.Raw.SetReadDeadline(time.Now())
	}()
	return func() { close(done); <-exited }
}

// StartTLS runs the server side of the TLS handshake after the go-ahead
// to verb (STARTTLS, STLS). Bytes the client pipelined behind the command
// are discarded, never executed (tls.ServerStartTLS; CVE-2011-0411). On
// success Conn is the TLS connection and TLS is set; the frontend then
// forgets what the client told it before, its reader included. StartTLS
// reports false, logged, when the session must end.
func (s *Session) StartTLS(verb string) bool {
	tc, discarded, err := tls.ServerStartTLS(s.Raw, s.R, s.f.EdgeTLS)
	if discarded > 0 {
		s.Log.Warn("discarded plaintext pipelined after "+verb, "bytes", discarded)
	}
	if err != nil {
		s.Log.Info("session", "outcome", "tls_failed", "err", err)
		return false
	}
	s.Conn, s.TLS = tc, true
	return true
}

// Reply writes response lines to the client, each ended by CRLF, in one
// write.
func (s *Session) Reply(lines ...string) error {
	_, err := s.Conn.Write([]byte(strings.Join(lines, "\r\n") + "\r\n"))
	return err
}

// sleep waits d unless the server is being closed.
func (s *Session) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.Ctx.Done():
	}
}

// AddrPort returns a's address and port, an IPv4-mapped address unmapped.
func AddrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
