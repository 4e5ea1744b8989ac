package smtptest

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"

	stdtls "crypto/tls"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// errIdentity refuses a PLAIN authorization identity other than the user.
var errIdentity = &gosmtp.SMTPError{
	Code:         535,
	EnhancedCode: gosmtp.EnhancedCode{5, 7, 8},
	Message:      "Authorization identity must match the user name",
}

// backend gives go-smtp one session per client, at its first HELO or EHLO.
type backend struct {
	srv *Server
	log *slog.Logger
}

// NewSession answers the client's HELO or EHLO: with EHLOReject when set,
// else with a session that records what the client sends.
func (b *backend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	remote := c.Conn().RemoteAddr().String()
	log := b.log.With("proto", "smtp", "backend", b.srv.Name, "client", remote)
	if r := b.srv.EHLOReject; r != nil {
		log.Info("smtptest: rejecting EHLO", "code", r.Code)
		if r.Code == 421 {
			closeAfterReply(c)
		}
		return nil, r // go-smtp writes an *SMTPError as the reply, unwrapped
	}
	_, isTLS := c.TLSConnectionState()
	log.Debug("smtptest: session", "helo", c.Hostname(), "tls", isTLS)
	return &session{srv: b.srv, conn: c, log: log, remote: remote, tls: isTLS}, nil
}

// closeAfterReply ends c's connection right after go-smtp's next reply.
func closeAfterReply(c *gosmtp.Conn) {
	nc := c.Conn()
	if tc, ok := nc.(*stdtls.Conn); ok {
		nc = tc.NetConn()
	}
	if tracked, ok := nc.(*conn); ok {
		tracked.closeAfterWrite.Store(true)
	}
}

// dropConn closes c's connection at once, without a reply.
func dropConn(c *gosmtp.Conn) {
	nc := c.Conn()
	if tc, ok := nc.(*stdtls.Conn); ok {
		nc = tc.NetConn() // no close_notify: the peer sees the TCP stream end
	}
	_ = nc.Close()
}

// session holds one client's transaction between MAIL and the end of DATA.
type session struct {
	srv    *Server
	conn   *gosmtp.Conn
	log    *slog.Logger
	remote string
	tls    bool
	user   string

	from string
	to   []string
}

var _ gosmtp.AuthSession = (*session)(nil)

// AuthMechanisms lists PLAIN when the server has users.
func (s *session) AuthMechanisms() []string {
	if s.srv.AuthUsers == nil {
		return nil
	}
	return []string{sasl.Plain}
}

// Auth starts a PLAIN exchange checked against AuthUsers.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.srv.AuthUsers == nil || mech != sasl.Plain {
		return nil, gosmtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(s.checkPlain), nil
}

func (s *session) checkPlain(identity, user, pass string) error {
	if identity != "" && identity != user {
		return errIdentity
	}
	want, ok := s.srv.AuthUsers[user]
	if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(pass)) != 1 {
		s.log.Info("smtptest: authentication failed", "user", user)
		return gosmtp.ErrAuthFailed
	}
	s.user = user
	s.log.Info("smtptest: authenticated", "user", user)
	return nil
}

// Mail starts a transaction.
func (s *session) Mail(from string, _ *gosmtp.MailOptions) error {
	s.from = from
	s.to = nil
	return nil
}

// Rcpt adds a recipient.
func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

// Data reads the message, then answers as the failure fields say.
func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return s.dataError(err)
	}
	if s.srv.DropAfterData {
		s.log.Info("smtptest: dropping connection after DATA", "bytes", len(data))
		dropConn(s.conn)
		return errors.New("smtptest: connection dropped after DATA")
	}
	reply := s.srv.DataReply
	if reply == nil || reply.Code/100 == 2 {
		s.srv.record(s.message(data))
		s.log.Info("smtptest: message accepted", "from", s.from, "rcpts", len(s.to), "bytes", len(data))
	}
	if reply == nil {
		return nil
	}
	if reply.Code == 421 {
		closeAfterReply(s.conn)
	}
	return reply // unwrapped: go-smtp type-asserts *SMTPError
}

// dataError passes go-smtp's own replies (552 for an oversized message)
// through unwrapped, as go-smtp needs, and names anything else.
func (s *session) dataError(err error) error {
	var smtpErr *gosmtp.SMTPError
	if errors.As(err, &smtpErr) {
		return smtpErr
	}
	return fmt.Errorf("smtptest: reading message: %w", err)
}

func (s *session) message(data []byte) Message {
	return Message{
		From:       s.from,
		To:         append([]string(nil), s.to...),
		Data:       data,
		Helo:       s.conn.Hostname(),
		User:       s.user,
		RemoteAddr: s.remote,
		TLS:        s.tls,
	}
}

// Reset forgets the transaction in progress.
func (s *session) Reset() {
	s.from = ""
	s.to = nil
}

// Logout ends the session.
func (s *session) Logout() error { return nil }
