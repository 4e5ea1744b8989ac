package smtp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// relay serves the session with go-smtp's server until the client leaves.
// A STARTTLS ends one go-smtp server (see clientTap); the connection is
// upgraded here and a new one serves the rest.
func (s *session) relay() {
	silent := false
	for {
		// go-smtp gets a plaintext tap, also over TLS: gatehouse knows
		// the TLS state itself (setTLS).
		tap := newClientTap(s, s.top, silent)
		s.serveGoSMTP(tap)
		if !tap.startTLS || !s.startTLS(tap.held) {
			return
		}
		silent = true
	}
}

// serveGoSMTP runs one go-smtp server over tap until it returns.
func (s *session) serveGoSMTP(tap *clientTap) {
	cfg := &s.f.cfg
	srv := gosmtp.NewServer(relayBackend{s})
	srv.Domain = cfg.Hostname
	srv.MaxLineLength = cfg.MaxLineLength
	srv.MaxRecipients = cfg.MaxRecipients
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.WriteTimeout = cfg.CommandTimeout
	// session.Auth enforces the TLS rule itself, with RFC 3207's 530
	// rather than go-smtp's 523.
	srv.AllowInsecureAuth = true
	srv.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	s.mu.Lock()
	s.srv, s.gconn, s.tap = srv, nil, tap
	s.mu.Unlock()
	// Serve returns once the connection is closed; Shutdown then waits
	// for go-smtp's own goroutine to be gone.
	srv.Serve(newOneConnListener(s.edge, tap))
	srv.Shutdown(context.Background())
}

// startTLS upgrades the client's connection after the STARTTLS command
// that ended go-smtp's server, held being what the client had sent from
// that command on. Whatever followed the command is discarded (RFC 3207
// section 4.2); the client must say EHLO again. It reports whether the
// session goes on.
func (s *session) startTLS(held []byte) bool {
	line, _, _ := bytes.Cut(held, []byte("\n"))
	if len(bytes.TrimSpace(line)) != len("STARTTLS") {
		s.reply("501 5.5.4 Syntax: STARTTLS")
		return false
	}
	if err := s.reply("220 2.0.0 Ready to start TLS"); err != nil {
		return false
	}
	if rest := len(held) - len(line) - 1; rest > 0 {
		s.log.Warn("smtp bytes pipelined after STARTTLS discarded", "bytes", rest)
	}
	s.edge.setTimeout(handshakeTimeout)
	defer s.edge.setTimeout(s.f.cfg.CommandTimeout)
	tc, discarded, err := tls.ServerStartTLS(s.edge, nil, s.f.EdgeTLS)
	if discarded > 0 {
		s.log.Warn("smtp bytes pipelined after STARTTLS discarded", "bytes", discarded)
	}
	if err != nil {
		s.outcome = "tls_failed"
		s.log.Info("smtp STARTTLS failed", "err", err)
		return false
	}
	s.setTLS(tc)
	s.mu.Lock()
	s.endTx(nil)
	s.mu.Unlock()
	return true
}

// relayBackend hands go-smtp the session at each HELO/EHLO.
type relayBackend struct{ s *session }

// NewSession implements gosmtp.Backend.
func (b relayBackend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	return b.s.begin(c)
}

var (
	_ gosmtp.Session     = (*session)(nil)
	_ gosmtp.AuthSession = (*session)(nil)
)

// begin answers the client's first HELO/EHLO (and its first after
// STARTTLS): the back-end (told who the client is by XCLIENT at setup,
// if configured) is greeted with the
// client's name, and its reply decides ours. The extensions go-smtp is
// about to advertise are set from what the back-ends offer.
func (s *session) begin(c *gosmtp.Conn) (gosmtp.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gconn = c
	if cs, ok := c.TLSConnectionState(); ok {
		s.tlsState = &cs
	}
	if s.leg.broken {
		return nil, s.lost(errors.New("back-end already gone"))
	}
	s.helo = c.Hostname()
	s.edge.helloDone()
	caps, err := s.leg.hello(s.helo)
	s.countReply("EHLO", err)
	if err != nil {
		return nil, s.backendError(err)
	}
	s.caps = caps
	s.advertise(caps)
	return s, nil
}

// advertise sets what go-smtp announces in its EHLO reply. Both run in
// go-smtp's goroutine for this connection, which alone reads these fields.
func (s *session) advertise(caps capabilities) {
	ext := s.f.caps.common(s.f.Pool.Backends, caps)
	srv, cfg := s.srv, &s.f.cfg
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	if ext.size > 0 && (srv.MaxMessageBytes == 0 || ext.size < srv.MaxMessageBytes) {
		srv.MaxMessageBytes = ext.size // RFC 1870: the smallest limit
	}
	srv.EnableSMTPUTF8 = ext.utf8
	srv.EnableDSN = ext.dsn
	// STARTTLS is offered only after EHLO, where RFC 3207 puts it; a
	// STARTTLS before it gets go-smtp's 502.
	if s.f.TLSMode == proxy.TLSStartTLS && s.f.EdgeTLS != nil && s.tlsState == nil {
		srv.TLSConfig = s.f.EdgeTLS // for the EHLO reply only: see clientTap
	}
}

// Mail relays MAIL FROM.
func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f.cfg.RequireAuth && s.user == "" {
		s.countError()
		return errAuthRequired
	}
	if s.tx != nil {
		// RFC 5321 section 4.1.4: no MAIL inside a transaction.
		return &gosmtp.SMTPError{Code: 503, EnhancedCode: gosmtp.EnhancedCode{5, 5, 1}, Message: "Nested MAIL command"}
	}
	if s.leg.broken {
		return s.lost(errors.New("back-end already gone"))
	}
	s.tx = &transaction{start: time.Now(), from: from}
	s.inTx.Store(true)
	s.leg.capture()
	err := s.leg.client.Mail(from, opts)
	s.countReply("MAIL", err)
	if err != nil {
		r := s.backendError(err)
		s.endTx(r)
		return r
	}
	s.tx.open = true
	s.passOK()
	return nil
}

// passOK hands the back-end's own 2xx to MAIL or RCPT, as captured, to
// the tap, which puts it in place of go-smtp's. Called with mu held.
func (s *session) passOK() {
	if r, ok := s.leg.captured(); ok && s.tap != nil {
		s.tap.okReply(r)
	}
}

// Rcpt relays RCPT TO.
func (s *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leg.broken || s.tx == nil {
		return s.lost(errors.New("back-end already gone or no transaction"))
	}
	s.leg.capture()
	err := s.leg.client.Rcpt(to, opts)
	s.countReply("RCPT", err)
	if err != nil {
		return s.backendError(err)
	}
	s.passOK()
	s.tx.rcpts++
	recipientsTotal.WithLabelValues(s.f.Pool.Name, s.leg.b.Name).Inc()
	return nil
}

// Data relays the message, from DATA or from BDAT chunks (which go-smtp
// pipes into r; the back-end gets DATA, dot-stuffed). The reply is the
// back-end's to the end of data: its 250 only once it gave one.
func (s *session) Data(r io.Reader) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.edge.setTimeout(s.f.cfg.DataTimeout)
	defer s.edge.setTimeout(s.f.cfg.CommandTimeout)
	s.inData.Store(true)
	defer s.inData.Store(false)
	defer s.dotAnomaly.Store(false)
	if s.leg.broken || s.tx == nil {
		return s.lost(errors.New("back-end already gone"))
	}
	final := s.relayData(r)
	s.countReply("DATA", final)
	s.endTx(final)
	return final
}

// relayData sends the message and returns the back-end's final reply,
// a 250 included (go-smtp writes an *SMTPError's code verbatim).
func (s *session) relayData(r io.Reader) *gosmtp.SMTPError {
	if _, bdat := r.(*io.PipeReader); !bdat && s.tap != nil && s.tap.dataNext {
		return s.pumpMessage()
	}
	w, err := s.leg.client.Data()
	if err != nil {
		return s.backendError(err) // go-smtp drains what the client sends
	}
	body := &countingReader{r: r}
	err = s.copyMessage(w, body)
	s.tx.size = body.n
	if err != nil {
		return s.dataFailed(body.err, err)
	}
	if _, bdat := r.(*io.PipeReader); !bdat && s.dotAnomaly.Load() {
		return s.refuseDotAnomaly()
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return s.backendError(err)
	}
	return okReply(resp.StatusText)
}

// copyMessage writes the optional Received header and the message, then
// leaves the end of data to w, go-smtp's DotWriter.
func (s *session) copyMessage(w io.Writer, body io.Reader) error {
	st := newStuffer(&deadlineWriter{conn: s.leg.conn, timeout: s.f.cfg.BackendCommandTimeout}, w)
	defer st.release()
	if s.f.cfg.ReceivedHeader {
		if _, err := io.WriteString(st, s.receivedHeader(time.Now())); err != nil {
			return err
		}
	}
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	if _, err := io.CopyBuffer(st, body, *buf); err != nil {
		return err
	}
	return st.finish()
}

// deadlineWriter gives each write to the back-end its own deadline: a
// back-end that stops reading mid-message is given up, while a long
// message from a slow client may take as long as it takes.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.conn.Write(p)
}

// copyBuffers hold message data on its way to the back-end, taken only
// while a message is copied.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// dataFailed handles a message that could not be copied. If the client's
// side failed (too large, reset, timeout) the back-end must not get the
// final dot, so its connection is closed and the session ends after the
// reply; if the back-end's side failed it is lost.
func (s *session) dataFailed(readErr, err error) *gosmtp.SMTPError {
	if readErr == nil {
		return s.lost(err)
	}
	s.leg.broken = true
	s.leg.abort()
	s.outcome = "data_aborted"
	s.edge.endAfterReply(s.goodbye("4.3.0", "Message transfer aborted, closing connection"))
	var se *gosmtp.SMTPError
	if errors.As(readErr, &se) {
		return se // go-smtp's own 552 for a message over the size limit
	}
	s.log.Info("smtp message not received in full", "err", readErr)
	return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0},
		Message: "Message transfer aborted, message not accepted"}
}

// refuseDotAnomaly refuses a message with a line of a dot and a bare CR
// or LF. go-smtp's reader drops that dot, which would alter the message
// silently, and back-ends differ in how they read such a line (SMTP
// smuggling). The back-end never gets the end of data: its connection is
// closed, and the session ends after the reply.
func (s *session) refuseDotAnomaly() *gosmtp.SMTPError {
	s.leg.broken = true
	s.leg.abort()
	s.outcome = "bare_cr_lf"
	s.log.Warn("smtp message refused: a line of a dot and a bare CR or LF")
	s.edge.endAfterReply(s.goodbye("4.3.0", "Closing connection"))
	return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 6, 0},
		Message: "Message refused: a line begins with a dot and a bare CR or LF (RFC 5321 section 2.3.8)"}
}

// okReply turns the back-end's status text after 250 (which go-smtp's
// client returns with the enhanced code still in front) into the reply.
func okReply(status string) *gosmtp.SMTPError {
	return reply{Code: 250, Lines: strings.Split(status, "\n")}.smtpError()
}

// Reset ends an open transaction, with RSET to the back-end if it had
// accepted MAIL. go-smtp also calls it after each DATA, when nothing is
// open any more.
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tx == nil {
		return
	}
	if s.tx.open && !s.leg.broken {
		if err := s.leg.client.Reset(); err != nil {
			s.backendError(err)
		}
	}
	s.endTx(nil)
}

// Logout is called at STARTTLS and when the connection closes; the
// back-end is reset by the next EHLO or closed by finish.
func (s *session) Logout() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endTx(nil)
	return nil
}

// countingReader counts the bytes read and keeps the first read error.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}
