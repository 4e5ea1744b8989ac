package pop3

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// handoff is a back-end connection that accepted the client's login.
type handoff struct {
	be    net.Conn      // the back-end connection (TLS or raw)
	beR   *bufio.Reader // what was read from be
	b     *proxy.Backend
	ok    string // the back-end's +OK to the login, relayed to the client
	user  string
	start time.Time
}

// login routes the user, logs in on the back-end and, on success, relays
// the back-end's +OK and returns the back-end to splice to. end reports
// that the session must close without a splice.
func (s *session) login(user, pass, mech string) (h *handoff, end bool) {
	log := s.log.With("user", user, "mech", mech)
	ip := s.client.Addr()
	if s.f.Throttle != nil && s.f.Throttle.Blocked(ip, user) {
		countLogin(s.f.Pool.Name, mech, "blocked")
		log.Warn("login", "outcome", "blocked")
		s.reply("-ERR [SYS/TEMP] Too many failed logins, try again later")
		return nil, true
	}
	s.attempts++
	if strings.ContainsAny(user+pass, "\r\n\x00") {
		return nil, s.failed(log, user, mech, "-ERR [AUTH] Authentication failed.", false)
	}
	res, err := s.f.router().Route(s.ctx, proxy.RouteQuery{User: user, Pass: pass, Protocol: "pop3",
		Attempt: s.attempts, Client: s.client, TLS: s.tls})
	var denied *proxy.DeniedError
	switch {
	case errors.As(err, &denied):
		s.sleep(denied.Wait) // Auth-Wait: the lookup asks for a pause before a retry
		return nil, s.failed(log, user, mech, "-ERR [AUTH] "+denied.Message, denied.Wait == 0)
	case err != nil:
		return nil, s.unavailable(log, mech, err)
	}
	h, err = s.dialLogin(res, firstOf(res.User, user), firstOf(res.Pass, pass))
	var refused *refusedError
	switch {
	case errors.As(err, &refused) && refused.temporary():
		countLogin(s.f.Pool.Name, mech, "unavailable")
		log.Warn("login", "outcome", "unavailable", "backend", refused.backend, "reply", refused.line)
		return nil, s.reply(refused.line) != nil
	case errors.As(err, &refused):
		return nil, s.failed(log.With("backend", refused.backend), user, mech, refused.reply(), false)
	case err != nil:
		return nil, s.unavailable(log, mech, err)
	}
	return s.loggedIn(log, h, user, mech, res.Source)
}

// loggedIn relays the back-end's +OK and completes the handoff.
func (s *session) loggedIn(log *slog.Logger, h *handoff, user, mech, source string) (*handoff, bool) {
	if s.f.Throttle != nil {
		s.f.Throttle.Succeeded(user)
	}
	countLogin(s.f.Pool.Name, mech, "ok")
	log.Info("login", "outcome", "ok", "backend", h.b.Name, "route", source)
	if err := s.reply(h.ok); err != nil {
		h.be.Close()
		return nil, true
	}
	h.user, h.start = user, time.Now()
	return h, false
}

// failed answers a refused login after the throttle's delay, the same for
// an unknown user as for a wrong password. It reports whether the session
// must end: when the throttle now blocks the client, or when close says so.
func (s *session) failed(log *slog.Logger, user, mech, reply string, close bool) bool {
	countLogin(s.f.Pool.Name, mech, "failed")
	blocked := false
	if s.f.Throttle != nil {
		var wait time.Duration
		wait, blocked = s.f.Throttle.Failed(s.client.Addr(), user)
		s.sleep(wait)
	}
	log.Info("login", "outcome", "failed", "blocked", blocked)
	if err := s.reply(reply); err != nil {
		return true
	}
	return close || blocked
}

// unavailable answers a login that could not be routed or served now.
func (s *session) unavailable(log *slog.Logger, mech string, err error) bool {
	countLogin(s.f.Pool.Name, mech, "unavailable")
	log.Warn("login", "outcome", "unavailable", "err", err)
	return s.reply("-ERR [SYS/TEMP] Mail server temporarily unavailable, try again later") != nil
}

// sleep waits d unless the server is being closed.
func (s *session) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// splice relays the back-end's +OK and any bytes either side sent ahead,
// then pumps bytes until the session ends.
func (s *session) splice(h *handoff) {
	defer h.be.Close()
	s.raw.SetDeadline(time.Time{})
	h.be.SetDeadline(time.Time{})
	pool := s.f.Pool.Name
	up, err := forward(h.be, s.r)
	var down int64
	if err == nil {
		down, err = forward(s.conn, h.beR)
	}
	outcome := "ok"
	if err == nil {
		release := proxy.TrackSession(pool, h.b, h.be)
		var u, d int64
		u, d, err = proxy.Splice(s.ctx, s.conn, h.be, s.f.Idle)
		release()
		up, down = up+u, down+d
	}
	switch {
	case errors.Is(err, proxy.ErrIdle):
		outcome = "idle_timeout"
	case err != nil:
		outcome = "error"
	}
	proxy.CountBytes(pool, h.b.Name, up, down)
	s.log.Info("session", "user", h.user, "backend", h.b.Name, "up", up, "down", down,
		"duration", time.Since(h.start).Round(time.Millisecond), "outcome", outcome)
}

// forward writes what r has buffered to w, so that bytes read ahead of the
// splice reach the other side first and in order.
func forward(w net.Conn, r *bufio.Reader) (int64, error) {
	n := r.Buffered()
	if n == 0 {
		return 0, nil
	}
	b, _ := r.Peek(n)
	m, err := w.Write(b)
	return int64(m), err
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// refusedError is a back-end's -ERR to the login.
type refusedError struct {
	backend string
	line    string // the back-end's reply
}

func (e *refusedError) Error() string { return "back-end " + e.backend + " refused login: " + e.line }

// temporary reports a refusal that is not about the credentials (RFC 2449
// section 8: IN-USE, LOGIN-DELAY, SYS/TEMP).
func (e *refusedError) temporary() bool {
	for _, code := range []string{"[IN-USE]", "[LOGIN-DELAY]", "[SYS/TEMP]"} {
		if strings.HasPrefix(e.line, "-ERR "+code) {
			return true
		}
	}
	return false
}

// reply is the client's answer: the back-end's -ERR, marked [AUTH] (RFC
// 3206) when it carries no response code of its own.
func (e *refusedError) reply() string {
	text := strings.TrimSpace(strings.TrimPrefix(e.line, "-ERR"))
	if strings.HasPrefix(text, "[") {
		return "-ERR " + text
	}
	if text == "" {
		text = "Authentication failed."
	}
	return "-ERR [AUTH] " + text
}
