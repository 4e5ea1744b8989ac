package pop3

import (
	"strings"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/maillogin"
)

// replies are POP3's answers to the outcomes of a login (RFC 2449 section
// 8, RFC 3206).
var replies = maillogin.Replies{
	Failed:      "-ERR [AUTH] ",
	Blocked:     "-ERR [SYS/TEMP] Too many failed logins, try again later",
	Unavailable: "-ERR [SYS/TEMP] Mail server temporarily unavailable, try again later",
}

// login routes the user, logs in on the back-end and, on success, relays
// the back-end's +OK and returns the back-end to splice to. end reports
// that the session must close without a splice.
func (s *session) login(user, pass, mech string) (h *maillogin.Handoff, end bool) {
	return s.Login(user, pass, mech, &replies, s.backendLogin)
}

// refused is a back-end's -ERR to the login. A refusal that is not about
// the credentials (RFC 2449 section 8: IN-USE, LOGIN-DELAY, SYS/TEMP)
// reaches the client as it is; any other is marked [AUTH] (RFC 3206) when
// it carries no response code of its own.
func refused(backend, line string) *maillogin.RefusedError {
	e := &maillogin.RefusedError{Backend: backend, Line: line, Reply: line}
	for _, code := range []string{"[IN-USE]", "[LOGIN-DELAY]", "[SYS/TEMP]"} {
		if strings.HasPrefix(line, "-ERR "+code) {
			e.Temporary = true
			return e
		}
	}
	text := strings.TrimSpace(strings.TrimPrefix(line, "-ERR"))
	switch {
	case strings.HasPrefix(text, "["):
		e.Reply = "-ERR " + text
	case text == "":
		e.Reply = replies.Failed + "Authentication failed."
	default:
		e.Reply = replies.Failed + text
	}
	return e
}
