package imaptest

import (
	"log/slog"

	stdtls "crypto/tls"

	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// session is one client connection. Before login its UserSession is nil and
// go-imap calls only Login and Close; after login the embedded UserSession
// serves every mailbox command.
type session struct {
	*imapmemserver.UserSession

	srv    *Server
	conn   *imapserver.Conn
	remote string
	log    *slog.Logger
}

var _ imapserver.SessionIMAP4rev2 = (*session)(nil)

// newSession is go-imap's hook for a new connection, called before the
// greeting.
func (s *Server) newSession(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	remote := c.NetConn().RemoteAddr().String()
	log := s.logger().With("proto", "imap", "backend", s.Name, "client", remote)
	log.Debug("imaptest: session start")
	return &session{srv: s, conn: c, remote: remote, log: log}, nil, nil
}

// Login checks the password, opens the user's mailboxes and records the
// login. go-imap also calls it for AUTHENTICATE PLAIN.
func (s *session) Login(username, password string) error {
	u := s.srv.user(username)
	if u == nil {
		s.log.Info("imaptest: login failed", "user", username, "reason", "no such user")
		return imapserver.ErrAuthFailed
	}
	if err := u.Login(username, password); err != nil {
		s.log.Info("imaptest: login failed", "user", username, "reason", "bad password")
		return err // go-imap turns an *imap.Error into its tagged NO
	}
	s.UserSession = imapmemserver.NewUserSession(u)
	_, isTLS := s.conn.NetConn().(*stdtls.Conn)
	s.srv.recordLogin(Login{User: username, RemoteAddr: s.remote, TLS: isTLS})
	s.log.Info("imaptest: logged in", "user", username, "tls", isTLS)
	return nil
}
