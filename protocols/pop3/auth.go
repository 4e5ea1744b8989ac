package pop3

import (
	"errors"
	"strings"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/maillogin"
)

// auth serves AUTH (RFC 5034). Without a mechanism it lists them, as
// Outlook expects; with PLAIN or LOGIN it collects the credentials at the
// edge and logs in with them.
func (s *session) auth(arg string) (*maillogin.Handoff, bool) {
	if !s.refuseCleartext() {
		return nil, false
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	if mech == "" {
		return nil, s.Reply("+OK\r\nPLAIN\r\nLOGIN\r\n.") != nil
	}
	var initial []byte
	if hasIR {
		var err error
		if initial, err = maillogin.DecodeInitial(ir); err != nil {
			return nil, s.Reply("-ERR Invalid base64 in initial response") != nil
		}
	}
	user, pass, err := s.SASL(mech, initial, s.readLine)
	var ioErr *maillogin.IOError
	switch {
	case errors.Is(err, maillogin.ErrCancelled):
		return nil, s.Reply("-ERR Authentication cancelled") != nil // RFC 5034 section 4
	case errors.As(err, &ioErr):
		s.readFailed(ioErr.Err)
		return nil, true
	case err != nil:
		return nil, s.Reply("-ERR "+saslText(mech, err)) != nil
	}
	return s.login(user, pass, strings.ToLower(mech))
}

// saslText is the -ERR text for a SASL failure that is not a wrong
// password.
func saslText(mech string, err error) string {
	switch {
	case errors.Is(err, maillogin.ErrBadBase64):
		return "Invalid base64 in response"
	case errors.Is(err, maillogin.ErrAuthzid):
		return "[AUTH] Authorization identity not supported"
	case errors.Is(err, maillogin.ErrMechanism):
		return "Authentication failed: unrecognized authentication mechanism " + mech
	}
	return "Authentication failed: " + err.Error()
}
