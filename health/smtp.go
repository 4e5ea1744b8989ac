package health

import (
	"bufio"
	"cmp"
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// SMTP checks a mail server the way a sending server would, through go-smtp's
// client: a 220 greeting, EHLO answered 250, optionally STARTTLS and EHLO
// again, then QUIT answered 221.
//
// The conversation always ends with QUIT while the server still listens in
// the clear (or over implicit TLS): after the last step when all went well,
// and after an unwanted reply too (except 421, which means the server is
// closing). HAProxy's smtpchk once hung up without QUIT and filled Exchange's
// logs with socket errors (haproxy/haproxy#1812). After a failed EHLO inside
// STARTTLS the probe can only close the TLS session, since go-smtp keeps that
// connection to itself.
//
// Like go-smtp, the probe falls back to HELO when EHLO is refused with 500
// or 502, as servers without ESMTP require, and introduces itself as
// "localhost" in the EHLO that precedes STARTTLS; HELO names it in the EHLO
// that follows.
type SMTP struct {
	// HELO is the name given in EHLO; empty means "localhost".
	HELO string
	// StartTLS upgrades with STARTTLS after the first EHLO and says EHLO
	// again inside TLS; a server that does not offer STARTTLS fails.
	StartTLS bool
	// ImplicitTLS speaks TLS from the first byte (smtps, port 465).
	ImplicitTLS bool
	// TLSConfig is the client TLS configuration; nil verifies the server
	// against the system roots, naming the host in the address.
	TLSConfig *stdtls.Config
	// Dial opens the TCP connection; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Probe runs the SMTP conversation against addr.
func (p *SMTP) Probe(ctx context.Context, addr string) error {
	a, err := begin(ctx, "smtp", p.Dial, addr)
	if err != nil {
		return err
	}
	defer a.end()
	var conn net.Conn = a.raw
	if p.ImplicitTLS {
		if conn, err = a.handshake(p.TLSConfig, ""); err != nil {
			return err
		}
	}
	s := &smtpSession{attempt: a, held: &heldConn{Conn: conn}}
	c, err := s.hello(p)
	if err != nil {
		return err
	}
	if err := c.Quit(); err != nil {
		return s.fail("QUIT", err)
	}
	return nil
}

// smtpSession is one SMTP probe's conversation.
type smtpSession struct {
	*attempt
	held *heldConn // the connection as go-smtp sees it
}

// hello runs the greeting, EHLO and optional STARTTLS, returning a client
// ready for QUIT.
func (s *smtpSession) hello(p *SMTP) (*gosmtp.Client, error) {
	helo := cmp.Or(p.HELO, "localhost")
	if !p.StartTLS {
		c := gosmtp.NewClient(s.held)
		if err := c.Hello(helo); err != nil {
			return nil, s.refused(err)
		}
		return c, nil
	}
	c, err := gosmtp.NewClientStartTLS(s.held, clientConfig(p.TLSConfig, hostOf(s.addr)))
	if err != nil {
		return nil, s.refused(err)
	}
	if err := c.Hello(helo); err != nil {
		defer c.Close()
		if st, ok := c.TLSConnectionState(); ok && !st.HandshakeComplete {
			return nil, s.attempt.fail(StageTLS, "TLS handshake", fmt.Errorf("handshake after STARTTLS: %w", err))
		}
		return nil, s.fail("EHLO", err)
	}
	return c, nil
}

// refused reports a failure before any TLS upgrade, naming the step by the
// last command written, and says QUIT if the server still listens.
func (s *smtpSession) refused(err error) error {
	step := s.held.verb
	if step == "" {
		step = "greeting"
	}
	verdict := s.fail(step, err)
	var se *gosmtp.SMTPError
	if s.alive(err) && !(errors.As(err, &se) && se.Code == 421) {
		s.quit()
	}
	return verdict
}

// fail wraps err from step as a protocol failure, quoting a server reply.
func (s *smtpSession) fail(step string, err error) error {
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		return s.attempt.fail(StageProtocol, step, fmt.Errorf("%s: %w", step, err))
	}
	what := step + " answered"
	if step == "greeting" {
		what = "greeting was"
	}
	return s.attempt.fail(StageProtocol, step, &replyError{what: what, reply: smtpReply(se), err: err})
}

// quit says QUIT after a failed step and waits briefly for the reply.
func (s *smtpSession) quit() {
	conn := s.held.Conn
	if err := conn.SetDeadline(time.Now().Add(farewellWait)); err != nil {
		return
	}
	if _, err := io.WriteString(conn, "QUIT\r\n"); err != nil {
		return
	}
	_, _ = bufio.NewReader(conn).ReadString('\n')
}

// smtpReply rebuilds a reply's text: "421 4.3.2 shutting down".
func smtpReply(se *gosmtp.SMTPError) string {
	e := se.EnhancedCode
	if e == gosmtp.NoEnhancedCode || e == (gosmtp.EnhancedCode{}) {
		return fmt.Sprintf("%03d %s", se.Code, se.Message)
	}
	return fmt.Sprintf("%03d %d.%d.%d %s", se.Code, e[0], e[1], e[2], se.Message)
}

// heldConn is the connection as go-smtp's client sees it. Its Close does
// nothing, because the probe owns the connection and may still owe the
// server a QUIT after go-smtp gives up on it; and it keeps the verb of the
// last command written, to name the step that failed.
type heldConn struct {
	net.Conn
	verb string
}

// Write notes the command's verb and writes it.
func (h *heldConn) Write(b []byte) (int, error) {
	h.verb = verbOf(b)
	return h.Conn.Write(b)
}

// Close leaves the connection open for the probe to close.
func (h *heldConn) Close() error { return nil }

// verbOf returns the leading word of a command line if it is a plain
// upper-case verb such as "EHLO", and "?" otherwise.
func verbOf(b []byte) string {
	n := 0
	for n < len(b) && n < 10 && b[n] >= 'A' && b[n] <= 'Z' {
		n++
	}
	if n == 0 || n == len(b) || (b[n] != ' ' && b[n] != '\r') {
		return "?"
	}
	return string(b[:n])
}
