package smtp

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

var (
	// errAuthFailed is the one reply to refused credentials, whether the
	// user or the password was wrong (RFC 4954 section 6).
	errAuthFailed = &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8},
		Message: "Authentication credentials invalid"}
	// errAuthBlocked ends a session that used up its failed logins.
	errAuthBlocked = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0},
		Message: "Too many failed authentications, try again later"}
	// errAuthTemporary answers an exchange the back-end could not finish.
	errAuthTemporary = &gosmtp.SMTPError{Code: 454, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0},
		Message: "Temporary authentication failure"}
)

// AuthMechanisms lists PLAIN and LOGIN when AUTH is relayed, the edge
// allows it (TLS, or a listener that permits plaintext AUTH), and the
// back-end offers one of them to check the credentials with.
func (s *session) AuthMechanisms() []string {
	if !s.authOffered() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *session) authOffered() bool {
	if s.f.cfg.Auth != AuthRelay || s.tlsRefused() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.caps.authMechanism(sasl.Plain) || s.caps.authMechanism(sasl.Login)
}

// tlsRefused reports whether AUTH must wait for STARTTLS.
func (s *session) tlsRefused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.TLSRequired && s.tlsState == nil
}

// Auth starts an AUTH exchange at the edge; the credentials it yields are
// checked by authenticating to the back-end with them.
func (s *session) Auth(mech string) (sasl.Server, error) {
	switch {
	case s.f.cfg.Auth != AuthRelay:
		return nil, gosmtp.ErrAuthUnsupported
	case s.tlsRefused():
		authTotal.WithLabelValues(s.f.Pool.Name, mech, "tls_required").Inc()
		return nil, errTLSRequired
	case !s.authOffered():
		return nil, gosmtp.ErrAuthUnsupported
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			return s.authenticate(mech, identity, user, pass)
		}), nil
	case sasl.Login:
		return newLoginServer(func(user, pass string) error {
			return s.authenticate(mech, "", user, pass)
		}), nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

// authenticate checks one set of credentials and counts the outcome.
func (s *session) authenticate(mech, identity, user, pass string) error {
	outcome, err := s.tryAuth(identity, user, pass)
	authTotal.WithLabelValues(s.f.Pool.Name, mech, outcome).Inc()
	if outcome == "success" {
		s.log.Info("smtp auth", "user", user, "mechanism", mech)
	}
	return err
}

// tryAuth applies the throttle around the back-end's verdict: a blocked
// client or user is refused without asking, a failure waits the
// throttle's delay and gets the one 535, and once blocked the session
// ends with 421.
func (s *session) tryAuth(identity, user, pass string) (outcome string, err error) {
	th := s.f.Throttle // nil: no throttle
	if th.Blocked(s.peer.ip, user) {
		s.log.Warn("smtp auth refused: too many failures", "user", user)
		return "blocked", s.endBlocked()
	}
	err = s.backendAuth(identity, user, pass)
	var se *gosmtp.SMTPError
	switch {
	case err == nil:
		th.Succeeded(s.peer.ip, user)
		return "success", nil
	case errors.As(err, &se) && se.Code/100 == 5:
		s.log.Info("smtp auth failed", "user", user, "reply", replyText(se))
		wait, blocked := th.Failed(s.peer.ip, user)
		sleepCtx(s.ctx, wait)
		if blocked {
			return "blocked", s.endBlocked()
		}
		return "failure", errAuthFailed
	}
	return "temporary", err
}

func (s *session) endBlocked() error {
	s.mu.Lock()
	s.outcome = "auth_blocked"
	s.mu.Unlock()
	s.edge.endAfterReply("")
	return errAuthBlocked
}

// backendAuth authenticates to the back-end, by PLAIN when it offers it
// (it carries the authorization identity), else by LOGIN.
func (s *session) backendAuth(identity, user, pass string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leg.broken {
		return s.lost(errors.New("back-end already gone"))
	}
	s.followUser(user)
	var c sasl.Client
	switch {
	case s.caps.authMechanism(sasl.Plain):
		c = sasl.NewPlainClient(identity, user, pass)
	case s.caps.authMechanism(sasl.Login) && (identity == "" || identity == user):
		c = sasl.NewLoginClient(user, pass)
	default:
		return errAuthFailed
	}
	err := s.leg.client.Auth(c)
	s.countReply("AUTH", err)
	switch {
	case err == nil:
		s.user = user
		return nil
	case errors.Is(err, sasl.ErrUnexpectedServerChallenge):
		// go-smtp's client cancelled with "*"; the connection is fine.
		return errAuthTemporary
	}
	return s.backendError(err)
}

// followUser moves the session to the user's own back-end when affinity
// is by user and one preferred over the current back-end answers. The
// current one stays if none does. Called with mu held, before the
// back-end has seen AUTH or MAIL.
func (s *session) followUser(user string) {
	if s.f.Affinity != AffinityUser {
		return
	}
	order := s.f.Pool.Pick(user)
	i := slices.Index(order, s.leg.b)
	if i == 0 {
		return
	}
	if i > 0 {
		order = order[:i]
	}
	l, err := s.f.openLeg(s.ctx, order, s.peer)
	if err != nil {
		s.log.Info("smtp session stays on its back-end", "user", user, "err", err)
		return
	}
	caps, err := l.switchTo(s.helo)
	if err != nil {
		s.log.Info("smtp session stays on its back-end", "user", user, "backend", l.b.Name, "err", err)
		l.close()
		return
	}
	old := s.leg
	s.setLeg(l)
	s.caps = caps
	old.close()
	s.log.Info("smtp session moved to the user's back-end", "user", user, "from", old.b.Name, "to", l.b.Name)
}

// switchTo brings a new leg, set up (XCLIENT included) by openLeg, to
// where the session's leg was: EHLO as the client's name.
func (l *leg) switchTo(helo string) (capabilities, error) {
	return l.hello(helo)
}

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login-00), which go-sasl has only as a client:
// "Username:", then "Password:", each answered in base64 (go-smtp does
// the encoding). A user name sent as initial response skips the first.
type loginServer struct {
	check func(user, pass string) error
	user  string
	step  int
}

func newLoginServer(check func(user, pass string) error) sasl.Server {
	return &loginServer{check: check}
}

// Next implements sasl.Server.
func (l *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	l.step++
	switch {
	case l.step == 1 && resp == nil:
		return []byte("Username:"), false, nil
	case l.step == 1:
		l.step++
		fallthrough
	case l.step == 2:
		l.user = string(resp)
		return []byte("Password:"), false, nil
	case l.step == 3:
		return nil, true, l.check(l.user, string(resp))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
