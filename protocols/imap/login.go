package imap

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
	ok    []string // the back-end's answer to the login, under the client's tag
	user  string
	start time.Time
}

// login routes the user, logs in on the back-end and, on success, relays
// the back-end's tagged OK and returns the back-end to splice to. end
// reports that the session must close without a splice.
func (s *session) login(tag, user, pass, mech string) (h *handoff, end bool) {
	log := s.log.With("user", user, "mech", mech)
	ip := s.client.Addr()
	if s.f.Throttle != nil && s.f.Throttle.Blocked(ip, user) {
		countLogin(s.f.Pool.Name, mech, "blocked")
		log.Warn("login", "outcome", "blocked")
		s.reply(tag+" NO [UNAVAILABLE] Too many failed logins, try again later", "* BYE Try again later")
		return nil, true
	}
	s.attempts++
	if strings.ContainsAny(user+pass, "\r\n\x00") {
		return nil, s.failed(log, user, mech, tag+" NO [AUTHENTICATIONFAILED] Authentication failed.", false)
	}
	res, err := s.f.router().Route(s.ctx, proxy.RouteQuery{User: user, Pass: pass, Protocol: "imap",
		Attempt: s.attempts, Client: s.client, TLS: s.tls})
	var denied *proxy.DeniedError
	switch {
	case errors.As(err, &denied):
		s.sleep(denied.Wait) // Auth-Wait: the lookup asks for a pause before a retry
		return nil, s.failed(log, user, mech, tag+" NO [AUTHENTICATIONFAILED] "+denied.Message, denied.Wait == 0)
	case err != nil:
		return nil, s.unavailable(log, tag, mech, err)
	}
	h, err = s.dialLogin(res, firstOf(res.User, user), firstOf(res.Pass, pass))
	var refused *refusedError
	switch {
	case errors.As(err, &refused) && refused.temporary():
		countLogin(s.f.Pool.Name, mech, "unavailable")
		log.Warn("login", "outcome", "unavailable", "backend", refused.backend, "reply", refused.text)
		return nil, s.reply(refused.reply(tag)) != nil
	case errors.As(err, &refused):
		return nil, s.failed(log.With("backend", refused.backend), user, mech, refused.reply(tag), false)
	case err != nil:
		return nil, s.unavailable(log, tag, mech, err)
	}
	return s.loggedIn(log, h, tag, user, mech, res.Source)
}

// loggedIn relays the back-end's OK under the client's tag and completes
// the handoff.
func (s *session) loggedIn(log *slog.Logger, h *handoff, tag, user, mech, source string) (*handoff, bool) {
	if s.f.Throttle != nil {
		s.f.Throttle.Succeeded(user)
	}
	countLogin(s.f.Pool.Name, mech, "ok")
	log.Info("login", "outcome", "ok", "backend", h.b.Name, "route", source)
	h.ok[len(h.ok)-1] = tag + " " + h.ok[len(h.ok)-1]
	if err := s.reply(h.ok...); err != nil {
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
	if close || blocked {
		s.reply("* BYE Try again later")
		return true
	}
	return false
}

// unavailable answers a login that could not be routed or served now.
func (s *session) unavailable(log *slog.Logger, tag, mech string, err error) bool {
	countLogin(s.f.Pool.Name, mech, "unavailable")
	log.Warn("login", "outcome", "unavailable", "err", err)
	return s.reply(tag+" NO [UNAVAILABLE] Mail server temporarily unavailable, try again later") != nil
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

// splice forwards any bytes either side sent ahead of the login's answer,
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

// refusedError is a back-end's tagged NO to the login.
type refusedError struct {
	backend string
	text    string // the back-end's reply after "tag NO "
}

func (e *refusedError) Error() string { return "back-end " + e.backend + " refused login: " + e.text }

// temporary reports a refusal that is not about the credentials (RFC 5530
// response codes).
func (e *refusedError) temporary() bool {
	for _, code := range []string{"[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[LIMIT]", "[CONTACTADMIN]"} {
		if strings.HasPrefix(e.text, code) {
			return true
		}
	}
	return false
}

// reply is the client's answer under its tag: the back-end's NO, marked
// [AUTHENTICATIONFAILED] (RFC 5530) when it carries no code of its own.
func (e *refusedError) reply(tag string) string {
	text := strings.TrimSpace(e.text)
	if strings.HasPrefix(text, "[") {
		return tag + " NO " + text
	}
	if text == "" {
		text = "Authentication failed."
	}
	return tag + " NO [AUTHENTICATIONFAILED] " + text
}
