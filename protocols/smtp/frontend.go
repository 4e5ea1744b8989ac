// Package smtp is gatehouse's SMTP frontend, for MX (25), submission (587)
// and implicit-TLS submission (465) listeners, in one of two modes.
//
// In relay mode gatehouse is the SMTP server the client sees (go-smtp's
// server) and an SMTP client of the back-end (go-smtp's client): it
// terminates STARTTLS and AUTH PLAIN/LOGIN at the edge and relays the
// session command by command, passing the back-end's every verdict back.
// In passthrough mode, for Exchange clients that speak AUTH NTLM, GSSAPI,
// X-EXPS or anything else gatehouse does not parse, a small hand-written
// state machine handles greeting, EHLO and STARTTLS at the edge and then
// splices the bytes untouched.
//
// Why go-smtp stays for the command grammar while the data path is
// gatehouse's own: CPU profiles of the binary (GOMAXPROCS=1, smtp-source
// through the relay to smtp-sink) put about nine tenths of the CPU of 10
// MiB messages under go-smtp's data reader, which un-stuffs the stream a
// byte at a time through bufio.ReadByte, and its writer re-stuffing it;
// with 1 KiB messages, one per session, the time is in system calls, a
// write per reply and per command. The message is what dataPump now
// relays (large reads, one write each, the stuffing left as it is: 200
// MiB of 10 MiB messages went from 2.2 to 0.24 CPU seconds), and
// clientTap sends the replies to a pipelined group in one write. In the
// profile of BenchmarkRelayMessage after that, go-smtp's own code is a
// few percent flat and system calls about half, most of them the
// back-end's round trips, which a state machine of our own would not
// remove: go-smtp's Session API calls Mail and Rcpt one at a time, and a
// relay that answers each with the back-end's own reply must wait for it
// anyway (sending a client's pipelined MAIL/RCPT group to the back-end
// in one write is what such a state machine would add; it is not done). go-smtp also carries AUTH's SASL
// exchange, BDAT, the SIZE/SMTPUTF8/DSN parameters and the limits that
// the behaviour tests pin down; rewriting them would buy little and risk
// much. The tap and the pump are the seams: go-smtp reads the client
// through the tap, which can hand the message to the pump whenever
// go-smtp has nothing of it buffered.
//
// Implementation notes (invariants):
//
//   - The back-end is dialed, and has greeted 220, before the client is
//     greeted. A back-end that is dead, hangs, or greets otherwise is
//     skipped for the next in affinity order; with none left the client gets
//     "421 4.3.2" and the connection closes (RFC 5321 section 3.1).
//   - Never answer 250 to DATA before the back-end's 250 for that message
//     (RFC 5321 sections 4.1.1.4 and 6.1): the reply to the end of data is
//     the back-end's own, passed through.
//   - Back-end replies reach the client as *gosmtp.SMTPError values,
//     unwrapped, with the back-end's code, enhanced code and text: go-smtp
//     type-asserts, and any other or wrapped error becomes a permanent 554.
//     go-smtp words its own 250 to MAIL and RCPT (its API passes errors,
//     not successes), so clientTap puts the back-end's 2xx in its place.
//   - go-smtp reads and writes the client's plaintext through clientTap,
//     also under TLS: gatehouse does STARTTLS itself (the tap ends one
//     go-smtp server at the command, relay upgrades and starts another),
//     so the tap can log a client's XCLIENT/XFORWARD, refuse a message
//     with a line of a dot and a bare CR or LF (go-smtp's reader would
//     drop that dot), and pass the back-end's replies through.
//   - A transport failure is always an explicit "421 4.4.2" *gosmtp.SMTPError,
//     never a wrapped error, and the session ends after it: the client keeps
//     the message and retries (a duplicate is possible, a loss is not).
//   - A message the client did not finish is never finished for it: the
//     back-end connection is closed without the final dot.
//   - End of data is CRLF.CRLF only (go-smtp's reader), and go-smtp's writer
//     dot-stuffs and turns bare LF into CRLF toward the back-end, so no
//     message can be smuggled inside another across gatehouse. A line of
//     a dot and a bare LF or CR after a CRLF gets the message refused
//     (550 5.6.0) rather than altered.
//   - A client's XCLIENT and XFORWARD never reach a back-end: go-smtp's
//     parser refuses them in relay mode; passthrough refuses them before
//     the splice, also inside the group that triggers it, and cannot see
//     them after, which is why passthrough listeners dial from their own
//     source address.
//   - Bytes pipelined after STARTTLS are discarded, never executed (RFC 3207
//     section 4.2, CVE-2011-0411): at the edge by clientTap (relay) or
//     tls.ServerStartTLS (passthrough); from a back-end any byte after its
//     220 gives that back-end up.
//   - Every AUTH failure gets the same "535 5.7.8" after the throttle's
//     delay, whatever the back-end said, so a wrong user and a wrong
//     password look alike; the back-end's own reply is logged.
//   - One goroutine writes to the client: go-smtp's or the passthrough
//     loop. A goodbye decided elsewhere (shutdown, throttle, a lost
//     back-end) goes through edgeConn.end, which that goroutine turns into
//     the last reply at its next read.
//   - One go-smtp Server per session, so the extensions it advertises
//     (SIZE, SMTPUTF8, DSN) follow what every back-end seen offers.
//
// It may import proxy and tls, never another protocol package.
package smtp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// AffinityUser routes a session by the user name it authenticates with:
// the back-end is chosen by client address before the greeting, and
// changed for the user's own once AUTH names the user (relay mode).
const AffinityUser = "user"

// handshakeTimeout bounds a client's TLS handshake (implicit TLS and
// STARTTLS in passthrough mode).
const handshakeTimeout = 30 * time.Second

// Frontend serves SMTP clients of one listener. Set the fields before the
// first connection; the zero value of each is documented.
type Frontend struct {
	// Link is how the listener reaches clients and back-ends: TLSMode
	// starttls offers STARTTLS, implicit is TLS from the first byte (465);
	// TLSRequired refuses AUTH before STARTTLS with 530 5.7.0 (and in
	// passthrough mode everything but EHLO, HELO, NOOP, RSET and QUIT);
	// BackendTLS nil verifies back-ends against the system roots by their
	// host name; Idle bounds a passthrough session once spliced (relay
	// sessions are bound by Config's command and data timeouts); the log
	// gets one line per transaction and per session.
	proxy.Link
	// Pool holds the back-ends; required.
	Pool *proxy.Pool
	// Affinity is "source-ip" (route by client address), "user" (by
	// client address, then by AUTH user), or "none"; "" means none, which
	// balances by the pool's policy.
	Affinity string
	// Suspect, if set, is told of a back-end that accepted a connection
	// but did not greet within the greeting timeout, so that the health
	// monitor takes it out for every client until its probes pass again
	// (build wires it to health.Monitor.Suspect). Nil skips such a
	// back-end for the one client only.
	Suspect func(b *proxy.Backend, why error)
	// Config holds the SMTP options; zero fields take their defaults.
	Config Config

	once sync.Once
	cfg  Config // Config with defaults applied
	caps capCache
}

func (f *Frontend) init() {
	f.once.Do(func() {
		f.cfg = f.Config
		f.cfg.SetDefaults()
		if f.cfg.SourceAddress != "" && f.Pool.Dialer == nil {
			f.Pool.Dialer = sourceDialer(f.cfg.SourceAddress)
		}
	})
}

func (f *Frontend) log() *slog.Logger {
	if f.Log != nil {
		return f.Log
	}
	return slog.Default()
}

// ServeConn implements proxy.Handler.
func (f *Frontend) ServeConn(ctx context.Context, conn net.Conn) {
	f.init()
	s := f.newSession(ctx, conn)
	defer s.finish()
	defer s.recoverPanic()
	if f.TLSMode == proxy.TLSImplicit && !s.handshake() {
		return
	}
	l, err := f.openLeg(ctx, f.Pool.Pick(s.routeKey()), s.peer)
	if err != nil {
		s.outcome = "no_backend"
		s.log.Warn("smtp session refused: no back-end", "err", err)
		s.reply(fmt.Sprintf("421 4.3.2 %s No mail server available, try again later", f.cfg.Hostname))
		return
	}
	s.setLeg(l)
	s.edge.expectHello(f.cfg.HelloTimeout)
	defer context.AfterFunc(ctx, s.abort)()
	s.watchShutdown()
	if f.cfg.Mode == ModePassthrough {
		s.passthrough()
		return
	}
	s.relay()
}

// sourceDialer dials back-ends from the local address ip (already
// validated), so that a back-end can tell this listener's connections
// from another's by address.
func sourceDialer(ip string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{KeepAlive: -1}
	if a, err := netip.ParseAddr(ip); err == nil {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0))
	}
	return d.DialContext
}

// Refuse implements proxy.Refuser: it tells a client turned away before
// routing why, in SMTP (RFC 5321 section 3.8: 421 and close).
func (f *Frontend) Refuse(conn net.Conn, reason string) {
	f.init()
	msg := "421 4.3.2 %s Service not available, try again later\r\n"
	switch reason {
	case "per_ip_limit":
		msg = "421 4.7.0 %s Too many connections from your address, try again later\r\n"
	case "shutdown":
		msg = "421 4.3.2 %s Service shutting down, try again later\r\n"
	}
	fmt.Fprintf(conn, msg, f.cfg.Hostname)
}

// routeKey is the affinity key before authentication.
func (s *session) routeKey() string {
	switch s.f.Affinity {
	case proxy.AffinitySourceIP, AffinityUser:
		return s.peer.ip.String()
	}
	return ""
}

// peer is the client as the back-end should learn of it.
type peer struct {
	remote, local net.Addr // the client's address, the listener's
	ip            netip.Addr
	port          int
	localIP       netip.Addr
	localPort     int
}

func newPeer(conn net.Conn) peer {
	p := peer{remote: conn.RemoteAddr(), local: conn.LocalAddr()}
	if ap, err := netip.ParseAddrPort(p.remote.String()); err == nil {
		p.ip, p.port = ap.Addr().Unmap(), int(ap.Port())
	}
	if ap, err := netip.ParseAddrPort(p.local.String()); err == nil {
		p.localIP, p.localPort = ap.Addr().Unmap(), int(ap.Port())
	}
	return p
}

func newSessionID() string { return fmt.Sprintf("%08x", rand.Uint32()) }

// handshake runs the implicit-TLS handshake within handshakeTimeout.
func (s *session) handshake() bool {
	if s.f.EdgeTLS == nil {
		s.outcome = "tls_unconfigured"
		s.log.Error("implicit TLS listener has no TLS config")
		return false
	}
	s.edge.setTimeout(handshakeTimeout)
	defer s.edge.setTimeout(s.f.cfg.CommandTimeout)
	tc, err := tls.ServerHandshake(s.edge, s.f.EdgeTLS)
	if err != nil {
		s.outcome = "tls_failed"
		s.log.Info("smtp session: TLS handshake failed", "err", err)
		return false
	}
	s.setTLS(tc)
	return true
}

// reply writes one whole reply line to the client, CRLF added. Only the
// goroutine that owns the client may call it.
func (s *session) reply(line string) error {
	s.edge.SetWriteDeadline(time.Now().Add(s.f.cfg.CommandTimeout))
	_, err := io.WriteString(s.top, line+"\r\n")
	return err
}

// recoverPanic is the session's last net: the client gets a 421, the log
// a stack, and every other session goes on.
func (s *session) recoverPanic() {
	v := recover()
	if v == nil {
		return
	}
	s.outcome = "panic"
	s.log.Error("smtp session panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	s.reply(fmt.Sprintf("421 4.3.0 %s Internal error, closing connection", s.f.cfg.Hostname))
}
