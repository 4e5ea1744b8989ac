package smtp

import (
	"bytes"
	"context"
	stdtls "crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/gatehouse-proxy/gatehouse/tls"
)

// relay serves the session with go-smtp's server until the client leaves.
func (s *session) relay() {
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
	s.srv = srv
	// Serve returns once the connection is closed; Shutdown then waits
	// for go-smtp's own goroutine to be gone.
	conn := s.top
	if _, isTLS := conn.(*stdtls.Conn); !isTLS { // go-smtp looks for *tls.Conn
		conn = &refusalWatcher{Conn: conn, s: s}
	}
	srv.Serve(newOneConnListener(s.edge, conn))
	srv.Shutdown(context.Background())
}

// refusalWatcher logs a client's XCLIENT and XFORWARD in relay mode.
// go-smtp's parser knows four-letter verbs only and answers every longer
// one with "501 5.5.2 Bad command", handing nothing to gatehouse, so these
// never reach a back-end; but an attempt to pass for a trusted relay
// deserves a log line, so the command lines the client sends are looked
// at on their way to go-smtp. (After STARTTLS go-smtp reads through TLS
// of its own, under which this cannot look, nor under implicit TLS,
// where go-smtp must be handed the *tls.Conn itself; the refusal stands
// all the same.)
type refusalWatcher struct {
	net.Conn
	s *session
}

// Read implements net.Conn.
func (w *refusalWatcher) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 && !w.s.inData.Load() {
		for b := p[:n]; len(b) > 0; {
			line := b
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				line, b = b[:i], b[i+1:]
			} else {
				b = nil
			}
			if verb := identityVerb(line); verb != "" {
				identityRefused.WithLabelValues(w.s.f.Pool.Name, verb).Inc()
				w.s.log.Warn("smtp client command refused: it would change the back-end's view of the client", "command", verb)
			}
		}
	}
	return n, err
}

// identityVerb returns XCLIENT or XFORWARD if line is that command.
func identityVerb(line []byte) string {
	for _, verb := range []string{"XCLIENT", "XFORWARD"} {
		if len(line) >= len(verb) && bytes.EqualFold(line[:len(verb)], []byte(verb)) &&
			(len(line) == len(verb) || line[len(verb)] == ' ' || line[len(verb)] == '\r') {
			return verb
		}
	}
	return ""
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
	if s.f.TLSMode == tls.ModeStartTLS && s.f.EdgeTLS != nil {
		srv.TLSConfig = s.f.EdgeTLS
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
	err := s.leg.client.Mail(from, opts)
	s.countReply("MAIL", err)
	if err != nil {
		r := s.backendError(err)
		s.endTx(r)
		return r
	}
	s.tx.open = true
	return nil
}

// Rcpt relays RCPT TO.
func (s *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leg.broken || s.tx == nil {
		return s.lost(errors.New("back-end already gone or no transaction"))
	}
	err := s.leg.client.Rcpt(to, opts)
	s.countReply("RCPT", err)
	if err != nil {
		return s.backendError(err)
	}
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
