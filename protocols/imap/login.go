package imap

import (
	"strings"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/maillogin"
)

// login routes the user, logs in on the back-end and, on success, relays
// the back-end's tagged OK under the client's tag and returns the back-end
// to splice to. end reports that the session must close without a splice.
func (s *session) login(tag, user, pass, mech string) (h *maillogin.Handoff, end bool) {
	r := &maillogin.Replies{ // RFC 5530 response codes
		Failed:      tag + " NO [AUTHENTICATIONFAILED] ",
		Blocked:     tag + " NO [UNAVAILABLE] Too many failed logins, try again later",
		Unavailable: tag + " NO [UNAVAILABLE] Mail server temporarily unavailable, try again later",
		Goodbye:     "* BYE Try again later",
	}
	return s.Login(user, pass, mech, r, func(l *maillogin.Leg, user, pass string) (string, error) {
		return s.backendLogin(&leg{Leg: l, clientTag: tag}, user, pass)
	})
}

// refused is a back-end's tagged NO to the login; text follows "NO". The
// client gets it under its own tag, marked [AUTHENTICATIONFAILED] (RFC
// 5530) when it carries no code of its own. A refusal with a code that is
// not about the credentials is temporary.
func refused(backend, tag, text string) *maillogin.RefusedError {
	e := &maillogin.RefusedError{Backend: backend, Line: text}
	text = strings.TrimSpace(text)
	for _, code := range []string{"[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[LIMIT]", "[CONTACTADMIN]"} {
		if strings.HasPrefix(text, code) {
			e.Temporary = true
			break
		}
	}
	switch {
	case strings.HasPrefix(text, "["):
		e.Reply = tag + " NO " + text
	case text == "":
		e.Reply = tag + " NO [AUTHENTICATIONFAILED] Authentication failed."
	default:
		e.Reply = tag + " NO [AUTHENTICATIONFAILED] " + text
	}
	return e
}
