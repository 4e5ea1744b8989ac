package maillogin

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// Replies are a protocol's answers to the outcomes of one login attempt,
// each one or more lines without the final CRLF.
type Replies struct {
	// Failed begins the answer to credentials that are wrong; the reason
	// follows it ("Authentication failed." or the lookup's message).
	Failed string
	// Blocked answers a client the throttle stops; the session ends.
	Blocked string
	// Unavailable answers a login that cannot be routed or served now.
	Unavailable string
	// Goodbye follows an answer that ends the session; "" sends nothing.
	Goodbye string
}

// BackendLogin runs a protocol's side of the back-end conversation on l,
// opened and with its PROXY header and implicit TLS done, up to the
// back-end's answer to the login. It returns the lines to relay to the
// client on success, and a *RefusedError when the back-end refuses.
type BackendLogin func(l *Leg, user, pass string) (ok string, err error)

// RefusedError is a back-end's refusal of the login (a POP3 -ERR, an IMAP
// tagged NO).
type RefusedError struct {
	Backend   string // the back-end's name
	Line      string // what the back-end answered, for the log
	Reply     string // the client's answer
	Temporary bool   // the refusal is not about the credentials
}

// Error implements error.
func (e *RefusedError) Error() string {
	return "back-end " + e.Backend + " refused login: " + e.Line
}

// Handoff is a back-end connection that accepted the client's login,
// ready to splice.
type Handoff struct {
	l     *Leg
	b     *proxy.Backend
	user  string
	start time.Time
}

// attempt is one login attempt.
type attempt struct {
	user, mech string
	r          *Replies
	log        *slog.Logger
}

// Login routes user, logs in with pass on a back-end by running login on
// it and, on success, relays the back-end's answer and returns the
// back-end to splice to. mech labels the log and the metrics. end reports
// that the session must close without a splice.
func (s *Session) Login(user, pass, mech string, r *Replies, login BackendLogin) (h *Handoff, end bool) {
	a := &attempt{user: user, mech: mech, r: r, log: s.Log.With("user", user, "mech", mech)}
	if s.f.Throttle != nil && s.f.Throttle.Blocked(s.Client.Addr(), user) {
		s.f.count(mech, "blocked")
		a.log.Warn("login", "outcome", "blocked")
		s.Reply(withGoodbye(r.Blocked, r.Goodbye)...)
		return nil, true
	}
	s.attempts++
	if strings.ContainsAny(user+pass, "\r\n\x00") {
		return nil, s.failed(a, a.log, r.Failed+"Authentication failed.", false)
	}
	res, err := s.f.router().Route(s.Ctx, proxy.RouteQuery{User: user, Pass: pass, Protocol: s.f.Protocol,
		Attempt: s.attempts, Client: s.Client, TLS: s.TLS})
	var denied *proxy.DeniedError
	switch {
	case errors.As(err, &denied):
		s.sleep(denied.Wait) // Auth-Wait: the lookup asks for a pause before a retry
		return nil, s.failed(a, a.log, r.Failed+denied.Message, denied.Wait == 0)
	case err != nil:
		return nil, s.unavailable(a, err)
	}
	h, ok, err := s.dialLogin(res, firstOf(res.User, user), firstOf(res.Pass, pass), login)
	var refused *RefusedError
	switch {
	case errors.As(err, &refused) && refused.Temporary:
		s.f.count(mech, "unavailable")
		a.log.Warn("login", "outcome", "unavailable", "backend", refused.Backend, "reply", refused.Line)
		return nil, s.Reply(refused.Reply) != nil
	case errors.As(err, &refused):
		return nil, s.failed(a, a.log.With("backend", refused.Backend), refused.Reply, false)
	case err != nil:
		return nil, s.unavailable(a, err)
	}
	return s.loggedIn(a, h, ok, res.Source)
}

// loggedIn relays the back-end's answer and completes the handoff.
func (s *Session) loggedIn(a *attempt, h *Handoff, ok, source string) (*Handoff, bool) {
	if s.f.Throttle != nil {
		s.f.Throttle.Succeeded(s.Client.Addr(), a.user)
	}
	s.f.count(a.mech, "ok")
	a.log.Info("login", "outcome", "ok", "backend", h.b.Name, "route", source)
	if err := s.Reply(ok); err != nil {
		h.l.Conn.Close()
		return nil, true
	}
	h.user, h.start = a.user, time.Now()
	return h, false
}

// failed answers a refused login after the throttle's delay, the same for
// an unknown user as for a wrong password. It reports whether the session
// must end: when the throttle now blocks the client, or when close says so.
func (s *Session) failed(a *attempt, log *slog.Logger, reply string, close bool) bool {
	s.f.count(a.mech, "failed")
	blocked := false
	if s.f.Throttle != nil {
		var wait time.Duration
		wait, blocked = s.f.Throttle.Failed(s.Client.Addr(), a.user)
		s.sleep(wait)
	}
	log.Info("login", "outcome", "failed", "blocked", blocked)
	if err := s.Reply(reply); err != nil {
		return true
	}
	if !close && !blocked {
		return false
	}
	if a.r.Goodbye != "" {
		s.Reply(a.r.Goodbye)
	}
	return true
}

// unavailable answers a login that could not be routed or served now.
func (s *Session) unavailable(a *attempt, err error) bool {
	s.f.count(a.mech, "unavailable")
	a.log.Warn("login", "outcome", "unavailable", "err", err)
	return s.Reply(a.r.Unavailable) != nil
}

// withGoodbye is reply followed by goodbye, when there is one.
func withGoodbye(reply, goodbye string) []string {
	if goodbye == "" {
		return []string{reply}
	}
	return []string{reply, goodbye}
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
