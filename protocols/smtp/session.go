package smtp

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// Replies gatehouse writes itself.
var (
	// errBackendLost answers the command in flight when the back-end
	// connection failed; the session ends after it.
	errBackendLost = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 4, 2},
		Message: "Connection to the mail server lost, try again later"}
	// errTLSRequired is RFC 3207 section 4's refusal before STARTTLS.
	errTLSRequired = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0},
		Message: "Must issue a STARTTLS command first"}
	// errAuthRequired is RFC 4954 section 6's refusal of MAIL before AUTH.
	errAuthRequired = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0},
		Message: "Authentication required"}
)

// session is one client connection, from accept to close. In relay mode
// it is also the go-smtp Session of every HELO/EHLO on the connection:
// go-smtp starts a new one after STARTTLS, and gets this one back.
type session struct {
	f     *Frontend
	ctx   context.Context
	id    string // names the session in logs and Received headers
	log   *slog.Logger
	peer  peer
	start time.Time
	edge  *edgeConn
	// top is what the client speaks SMTP over: edge, or TLS over it.
	// Only the goroutine that owns the client uses it.
	top net.Conn

	watch     chan struct{} // closed to stop watchShutdown
	inTx      atomic.Bool   // a transaction is open (s.tx != nil), readable without mu
	watchDone sync.WaitGroup

	// current is the leg, for closing it from any goroutine.
	current atomic.Pointer[leg]
	// inData is set while a message is read (relay mode).
	inData atomic.Bool
	// dotAnomaly is set when the client sent a line of a dot and a bare
	// CR or LF (see clientTap), and cleared after each message.
	dotAnomaly atomic.Bool

	// mu guards what follows. go-smtp calls Data from a goroutine of its
	// own for BDAT, and watchShutdown runs apart, so the leg and the
	// transaction are only touched with mu held.
	mu       sync.Mutex
	leg      *leg
	release  func() // ends tracking on the back-end
	caps     capabilities
	tlsState *stdtls.ConnectionState
	helo     string
	user     string
	tx       *transaction
	txs      int
	counters counterCache
	up, down int64 // bytes spliced in passthrough mode
	errs     int
	shutdown bool
	outcome  string

	// relay mode: the session's go-smtp server and connection.
	srv   *gosmtp.Server
	gconn *gosmtp.Conn
	tap   *clientTap
}

func (f *Frontend) newSession(ctx context.Context, conn net.Conn) *session {
	p := newPeer(conn)
	s := &session{
		f:       f,
		ctx:     ctx,
		id:      newSessionID(),
		peer:    p,
		start:   time.Now(),
		edge:    newEdgeConn(conn, f.cfg.CommandTimeout),
		watch:   make(chan struct{}),
		outcome: "ok",
	}
	s.top = s.edge
	s.edge.top = s.writer
	s.log = f.log().With("proto", "smtp", "cid", s.id, "listener", f.Pool.Name,
		"client", p.remote.String())
	return s
}

// writer returns the connection the client currently speaks over: go-smtp
// may have started TLS on its own.
func (s *session) writer() net.Conn {
	if s.gconn != nil {
		return s.gconn.Conn()
	}
	return s.top
}

// setTLS records that the client now speaks TLS over tc.
func (s *session) setTLS(tc *stdtls.Conn) {
	cs := tc.ConnectionState()
	s.mu.Lock()
	s.top, s.tlsState = tc, &cs
	s.mu.Unlock()
}

// setLeg makes l the session's back-end and tracks the session on it, so
// that an operator who disables the back-end, or a reload that removes it,
// ends the session too: with a 421 (RFC 5321 section 3.8), not a bare
// close.
func (s *session) setLeg(l *leg) {
	if s.release != nil {
		s.release()
	}
	s.leg = l
	s.current.Store(l)
	s.release = proxy.TrackSession(s.f.Pool.Name, l.b, closerFunc(func() error {
		s.endFromOutside(l)
		return nil
	}))
}

// endFromOutside ends the session on l's behalf with a 421. Between two
// transactions the reader writes it at once (edgeConn.end); in one, the
// back-end is cut and the relay's own "421 4.4.2 connection lost" is the
// reply to the command in flight (a second goodbye would follow it). A
// session that does not read (a client that reads nothing) is closed
// after goodbyeWait.
func (s *session) endFromOutside(l *leg) {
	if !s.inTx.Load() { // not mu: the session may hold it while it waits
		s.edge.end(s.goodbye("4.3.2", "Service not available, closing transmission channel"))
	} else {
		l.abort()
	}
	time.AfterFunc(goodbyeWait, func() {
		l.abort()
		s.edge.Close()
	})
}

// goodbyeWait bounds how long a session ended from outside may take to
// write its 421 before its connection is closed under it.
const goodbyeWait = 2 * time.Second

// abort ends the session at once, from any goroutine: the server is
// closing and will not wait.
func (s *session) abort() {
	if l := s.current.Load(); l != nil {
		l.abort()
	}
	s.edge.Close()
}

type closerFunc func() error

func (c closerFunc) Close() error { return c() }

// watchShutdown says goodbye to the client when a graceful shutdown
// starts and no transaction is open; an open one finishes first.
func (s *session) watchShutdown() {
	draining := proxy.ShuttingDown(s.ctx)
	s.watchDone.Add(1)
	go func() {
		defer s.watchDone.Done()
		select {
		case <-draining:
			s.mu.Lock()
			s.shutdown = true
			if s.tx == nil {
				s.edge.end(s.goodbye("4.3.2", "Service shutting down, try again later"))
			}
			s.mu.Unlock()
		case <-s.watch:
		case <-s.edge.Done():
		}
	}()
}

// stopWatching ends watchShutdown and waits for it.
func (s *session) stopWatching() {
	select {
	case <-s.watch:
	default:
		close(s.watch)
	}
	s.watchDone.Wait()
}

// closing formats a 421 reply line that closes the session.
func (s *session) closing(enhanced, text string) string {
	return fmt.Sprintf("421 %s %s %s", enhanced, s.f.cfg.Hostname, text)
}

// goodbye is closing as a whole reply, for edgeConn.end.
func (s *session) goodbye(enhanced, text string) string {
	return s.closing(enhanced, text) + "\r\n"
}

// finish closes the back-end and records the session.
func (s *session) finish() {
	s.stopWatching()
	s.mu.Lock()
	defer s.mu.Unlock()
	backend := ""
	if s.leg != nil {
		backend = s.leg.b.Name
		s.leg.close()
		s.release()
	}
	sessionsTotal.WithLabelValues(s.f.Pool.Name, backend, s.f.cfg.Mode, yesNo(s.tlsState != nil)).Inc()
	attrs := []any{"backend", backend, "helo", s.helo, "user", s.user, "tls", s.tlsState != nil,
		"transactions", s.txs, "duration", time.Since(s.start).Round(time.Millisecond), "outcome", s.outcome}
	if s.f.cfg.Mode == ModePassthrough {
		attrs = append(attrs, "up", s.up, "down", s.down)
	}
	s.log.Info("smtp session", attrs...)
}

// lost gives up on the back-end after a transport failure: the client
// gets errBackendLost for the command in flight, and the session ends.
// Called with mu held.
func (s *session) lost(err error) *gosmtp.SMTPError {
	if !s.leg.broken {
		s.leg.broken = true
		s.leg.abort()
		backendFailures.WithLabelValues(s.f.Pool.Name, s.leg.b.Name, "lost").Inc()
		s.log.Warn("smtp back-end lost", "backend", s.leg.b.Name, "err", err)
	}
	s.outcome = "backend_lost"
	s.edge.endAfterReply("")
	return errBackendLost
}

// backendError turns what go-smtp's client returned into the reply for
// the client: the back-end's own reply, unwrapped, or errBackendLost.
// Called with mu held.
func (s *session) backendError(err error) *gosmtp.SMTPError {
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		return s.lost(err)
	}
	if c := se.Code / 100; c != 4 && c != 5 {
		// A 2xx or 3xx where another reply was due (a 250 to DATA, say)
		// means the back-end is out of step with its commands: passed on,
		// it would tell the client a message was taken that was not.
		return s.lost(fmt.Errorf("back-end answered %d out of turn: %w", se.Code, err))
	}
	if se.Code == 421 { // RFC 5321 section 3.8: the back-end is closing
		s.leg.broken = true
		s.outcome = "backend_closed"
		s.edge.endAfterReply("")
	}
	s.countError()
	return se
}

// countError ends the session once it has had cfg.MaxErrors error replies.
func (s *session) countError() {
	if s.errs++; s.errs == s.f.cfg.MaxErrors {
		s.outcome = "too_many_errors"
		s.edge.endAfterReply(s.goodbye("4.7.0", "Too many errors, closing connection"))
	}
}

// countReply counts the reply the client gets for a relayed command.
func (s *session) countReply(cmd string, err error) {
	code := 250
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		code = se.Code
	} else if err != nil {
		code = errBackendLost.Code
	}
	if s.counters == nil {
		s.counters = make(counterCache)
	}
	s.counters.reply(s.f.Pool.Name, replyKey{s.leg.b.Name, cmd, replyClass(code)}).Inc()
}

// transaction is one mail transaction, from MAIL to its end.
type transaction struct {
	start time.Time
	from  string
	rcpts int   // recipients the back-end accepted
	size  int64 // message bytes read from the client
	open  bool  // the back-end accepted MAIL: an abort needs RSET
}

// endTx records the transaction that just ended with reply r (nil when
// the client abandoned it) and, at shutdown, ends the session. Called
// with mu held.
func (s *session) endTx(r *gosmtp.SMTPError) {
	tx := s.tx
	s.tx = nil
	s.inTx.Store(false)
	if tx == nil {
		return
	}
	s.txs++
	outcome := "aborted"
	if r != nil {
		outcome = txOutcome(r.Code)
	}
	backend := s.leg.b.Name
	transactionsTotal.WithLabelValues(s.f.Pool.Name, backend, outcome).Inc()
	if tx.size > 0 {
		messageBytesTotal.WithLabelValues(s.f.Pool.Name, backend).Add(float64(tx.size))
	}
	if s.log.Enabled(s.ctx, slog.LevelInfo) {
		text := ""
		if r != nil {
			text = replyText(r)
		}
		s.log.Info("smtp transaction", "backend", backend, "from", tx.from, "rcpts", tx.rcpts, "size", tx.size,
			"user", s.user, "reply", text, "outcome", outcome, "duration", time.Since(tx.start).Round(time.Millisecond))
	}
	if s.shutdown {
		s.edge.endAfterReply(s.goodbye("4.3.2", "Service shutting down, try again later"))
	}
}

func txOutcome(code int) string {
	switch code / 100 {
	case 2:
		return "accepted"
	case 4:
		return "deferred"
	}
	return "rejected"
}

// replyText renders a reply for the log: "250 2.0.0 Ok: queued as 4Xyz".
func replyText(r *gosmtp.SMTPError) string {
	ec := r.EnhancedCode
	if ec == gosmtp.EnhancedCodeNotSet || ec == gosmtp.NoEnhancedCode {
		return fmt.Sprintf("%d %s", r.Code, r.Message)
	}
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, ec[0], ec[1], ec[2], r.Message)
}
