package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// maxSyntaxErrors is how many malformed commands a passthrough client may
// send before the session is closed, as go-smtp allows in relay mode.
const maxSyntaxErrors = 3

// preAuth is passthrough mode's hand-written state machine: it greets,
// answers EHLO with the back-end's own capabilities, does STARTTLS at the
// edge, and at the first command it does not handle itself (AUTH, MAIL,
// X-EXPS, anything) hands that command and every byte after it to the
// back-end, then splices.
type preAuth struct {
	s       *session
	br      *bufio.Reader
	greeted bool // HELO/EHLO since the greeting or STARTTLS
	errs    int
}

// passthrough serves the session until it is spliced or ends.
func (s *session) passthrough() {
	p := &preAuth{s: s, br: bufio.NewReaderSize(s.top, s.f.cfg.MaxLineLength)}
	if p.say(fmt.Sprintf("220 %s ESMTP Service ready", s.f.cfg.Hostname)) {
		return
	}
	for {
		raw, line, err := readCommand(p.br)
		if err != nil {
			p.readFailed(err)
			return
		}
		if p.handle(raw, line) {
			return
		}
	}
}

// readCommand reads one command line: as sent, and without its CRLF.
func readCommand(br *bufio.Reader) (raw []byte, line string, err error) {
	b, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, "", errLineTooLong
	}
	if err != nil {
		return nil, "", err
	}
	raw = bytes.Clone(b)
	return raw, strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
}

// handle runs one command; it reports whether the session is over (or
// spliced, which for this loop is the same).
func (p *preAuth) handle(raw []byte, line string) bool {
	verb, arg, err := parseCommand(line)
	if err != nil {
		return p.fail("500 5.5.2 Syntax error, command unrecognized")
	}
	switch verb {
	case "EHLO", "HELO":
		return p.hello(verb, arg)
	case "STARTTLS":
		return p.startTLS(arg)
	case "NOOP", "RSET":
		return p.say("250 2.0.0 OK")
	case "XCLIENT", "XFORWARD":
		return p.refuseIdentity(verb)
	case "QUIT":
		p.say(fmt.Sprintf("221 2.0.0 %s Bye", p.s.f.cfg.Hostname))
		return true
	}
	if !p.greeted {
		return p.fail("503 5.5.1 Send EHLO first")
	}
	if p.s.f.TLSRequired && p.s.tlsState == nil {
		// Past this point gatehouse sees nothing, so TLS is required
		// before anything reaches the back-end (RFC 3207 section 4).
		return p.fail("530 5.7.0 Must issue a STARTTLS command first")
	}
	return p.handOver(raw)
}

// refuseIdentity refuses a client's XCLIENT or XFORWARD, which would make
// the back-end take the client for someone else (a trusted relay).
func (p *preAuth) refuseIdentity(verb string) bool {
	identityRefused.WithLabelValues(p.s.f.Pool.Name, verb).Inc()
	p.s.log.Warn("smtp client command refused: it would change the back-end's view of the client", "command", verb)
	return p.fail("550 5.7.0 " + verb + " is not permitted")
}

// identityCommand returns XCLIENT or XFORWARD when one of the whole lines
// in b is that command, and "" otherwise.
func identityCommand(b []byte) string {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return "" // not a whole line yet: it goes after the splice
		}
		line := b[:i]
		b = b[i+1:]
		if verb := identityVerb(line); verb != "" {
			return verb
		}
	}
	return ""
}

// say writes one reply; it reports whether the client is gone.
func (p *preAuth) say(line string) bool {
	return p.s.reply(line) != nil
}

// fail answers an error and ends the session after too many.
func (p *preAuth) fail(line string) bool {
	if p.say(line) {
		return true
	}
	if p.errs++; p.errs > maxSyntaxErrors {
		p.s.outcome = "too_many_errors"
		p.say(fmt.Sprintf("421 4.7.0 %s Too many errors, closing connection", p.s.f.cfg.Hostname))
		return true
	}
	return false
}

// readFailed ends the session after a read error, with a reply when one
// is due.
func (p *preAuth) readFailed(err error) {
	switch {
	case errors.Is(err, errLineTooLong):
		p.s.outcome = "line_too_long"
		p.say("500 5.5.2 Line too long, closing connection")
	case errors.Is(err, os.ErrDeadlineExceeded):
		p.s.outcome = "timeout"
		p.say(fmt.Sprintf("421 4.4.2 %s Timeout, closing connection", p.s.f.cfg.Hostname))
	}
}

// hello relays HELO/EHLO to the back-end and answers with its reply: gatehouse's own first line, the back-end's
// extensions, and STARTTLS as gatehouse offers it.
func (p *preAuth) hello(verb, arg string) bool {
	name := heloName(arg)
	if name == "" {
		return p.fail("501 5.5.4 Syntax: " + verb + " hostname")
	}
	s, l := p.s, p.s.leg
	l.conn.SetDeadline(time.Now().Add(s.f.cfg.BackendCommandTimeout))
	defer l.conn.SetDeadline(time.Time{})
	r, err := l.command(verb + " " + name)
	if err != nil {
		return p.lost(err)
	}
	repliesTotal.WithLabelValues(s.f.Pool.Name, l.b.Name, "EHLO", replyClass(r.Code)).Inc()
	if r.Code != 250 {
		_, err := s.top.Write(r.wire())
		return err != nil || r.Code == 421
	}
	p.greeted = true
	s.edge.helloDone()
	s.mu.Lock()
	s.helo = name
	s.mu.Unlock()
	if verb == "HELO" {
		return p.say(fmt.Sprintf("250 %s Hello %s", s.f.cfg.Hostname, name))
	}
	_, err = s.top.Write(p.ehloReply(r, name).wire())
	return err != nil
}

// ehloReply rewrites the back-end's EHLO reply for the client. STARTTLS
// is gatehouse's to offer; XCLIENT and XFORWARD were offered to gatehouse,
// not to the client; AUTH waits for TLS where TLS is required.
func (p *preAuth) ehloReply(r reply, name string) reply {
	s := p.s
	out := reply{Code: 250, Lines: []string{s.f.cfg.Hostname + " Hello " + name}}
	for _, l := range r.Lines[1:] {
		kw, _, _ := strings.Cut(strings.TrimSpace(l), " ")
		switch strings.ToUpper(kw) {
		case "STARTTLS", "XCLIENT", "XFORWARD":
			continue
		case "AUTH":
			if s.f.TLSRequired && s.tlsState == nil {
				continue
			}
		}
		out.Lines = append(out.Lines, l)
	}
	if s.tlsState == nil && s.f.TLSMode == proxy.TLSStartTLS && s.f.EdgeTLS != nil {
		out.Lines = append(out.Lines, "STARTTLS")
	}
	return out
}

// startTLS upgrades the client's connection at the edge. Whatever the
// client pipelined after the command is thrown away (RFC 3207 section
// 4.2), and the client must say EHLO again.
func (p *preAuth) startTLS(arg string) bool {
	s := p.s
	switch {
	case arg != "":
		return p.fail("501 5.5.4 Syntax: STARTTLS")
	case s.tlsState != nil:
		return p.fail("502 5.5.1 Already running in TLS")
	case s.f.TLSMode != proxy.TLSStartTLS || s.f.EdgeTLS == nil:
		return p.fail("502 5.5.1 STARTTLS not offered")
	}
	if p.say("220 2.0.0 Ready to start TLS") {
		return true
	}
	s.edge.setTimeout(handshakeTimeout)
	defer s.edge.setTimeout(s.f.cfg.CommandTimeout)
	tc, discarded, err := tls.ServerStartTLS(s.edge, p.br, s.f.EdgeTLS)
	if discarded > 0 {
		s.log.Warn("smtp bytes pipelined after STARTTLS discarded", "bytes", discarded)
	}
	if err != nil {
		s.outcome = "tls_failed"
		s.log.Info("smtp STARTTLS failed", "err", err)
		return true
	}
	s.setTLS(tc)
	p.br = bufio.NewReaderSize(tc, s.f.cfg.MaxLineLength)
	p.greeted = false
	return false
}

// lost ends the session when the back-end failed before the splice.
func (p *preAuth) lost(err error) bool {
	s := p.s
	s.leg.broken = true
	backendFailures.WithLabelValues(s.f.Pool.Name, s.leg.b.Name, "lost").Inc()
	s.log.Warn("smtp back-end lost", "backend", s.leg.b.Name, "err", err)
	s.outcome = "backend_lost"
	p.say(s.closing("4.4.2", "Connection to the mail server lost, try again later"))
	return true
}

// handOver sends the command that ends the pre-auth phase, and whatever
// the client pipelined after it, to the back-end; then the bytes flow
// untouched both ways until either side ends. Between two plain TCP
// sockets Splice moves them with splice(2).
func (p *preAuth) handOver(raw []byte) bool {
	s, l := p.s, p.s.leg
	s.stopWatching()
	if s.edge.isEnding() { // shutdown began: say goodbye instead
		s.edge.sayGoodbye()
		return true
	}
	if n := l.br.Buffered(); n > 0 {
		return p.lost(fmt.Errorf("back-end sent %d bytes nobody asked for", n))
	}
	pending, _ := p.br.Peek(p.br.Buffered())
	if verb := identityCommand(pending); verb != "" {
		// The group would reach the back-end whole: refuse it whole.
		p.refuseIdentity(verb)
		p.say(s.closing("4.7.0", verb+" is not permitted, closing connection"))
		return true
	}
	first := append(raw, pending...)
	l.conn.SetWriteDeadline(time.Now().Add(s.f.cfg.BackendCommandTimeout))
	if _, err := l.conn.Write(first); err != nil {
		return p.lost(err)
	}
	l.conn.SetWriteDeadline(time.Time{})
	l.spliced = true
	s.edge.setTimeout(0)
	s.edge.Conn.SetDeadline(time.Time{})
	var client net.Conn = s.edge.Conn // the raw socket, for splice(2)
	if s.top != net.Conn(s.edge) {
		client = s.top
	}
	up, down, err := proxy.Splice(s.ctx, client, l.conn, s.f.Idle)
	up += int64(len(first))
	proxy.CountBytes(s.f.Pool.Name, l.b.Name, up, down)
	s.mu.Lock()
	s.up, s.down = up, down
	if errors.Is(err, proxy.ErrIdle) {
		s.outcome = "idle_timeout"
	}
	s.mu.Unlock()
	return true
}
