package pop3

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-sasl"
)

// SASL outcomes that are the client's doing, not a failed login.
var (
	errCancelled = errors.New("authentication cancelled")
	errBadBase64 = errors.New("invalid base64")
	errAuthzid   = errors.New("authorization identity not supported")
)

// auth serves AUTH (RFC 5034). Without a mechanism it lists them, as
// Outlook expects; with PLAIN or LOGIN it collects the credentials at the
// edge and logs in with them.
func (s *session) auth(arg string) (*handoff, bool) {
	if !s.refuseCleartext() {
		return nil, false
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	if mech == "" {
		return nil, s.reply("+OK\r\nPLAIN\r\nLOGIN\r\n.") != nil
	}
	var initial []byte
	if hasIR {
		var err error
		if initial, err = decodeIR(ir); err != nil {
			return nil, s.reply("-ERR Invalid base64 in initial response") != nil
		}
	}
	user, pass, err := s.sasl(mech, initial)
	switch {
	case errors.Is(err, errCancelled):
		return nil, s.reply("-ERR Authentication cancelled") != nil // RFC 5034 section 4
	case errors.As(err, new(ioError)):
		s.readFailed(errors.Unwrap(err))
		return nil, true
	case err != nil:
		return nil, s.reply("-ERR "+saslText(err)) != nil
	}
	return s.login(user, pass, strings.ToLower(mech))
}

// decodeIR decodes an initial response; "=" is an empty one (RFC 5034
// section 4).
func decodeIR(ir string) ([]byte, error) {
	if ir == "=" {
		return []byte{}, nil
	}
	return base64.StdEncoding.DecodeString(ir)
}

// sasl runs the server side of PLAIN or LOGIN and returns the
// credentials. ir is nil when the client sent no initial response.
func (s *session) sasl(mech string, ir []byte) (user, pass string, err error) {
	var srv sasl.Server
	switch mech {
	case sasl.Plain:
		srv = sasl.NewPlainServer(func(identity, u, p string) error {
			if identity != "" && identity != u {
				return errAuthzid
			}
			user, pass = u, p
			return nil
		})
	case sasl.Login:
		srv = &loginServer{done: func(u, p string) { user, pass = u, p }}
	default:
		return "", "", fmt.Errorf("unrecognized authentication mechanism %s", mech)
	}
	return user, pass, s.exchange(srv, ir)
}

// exchange relays challenges ("+ base64") and responses until srv is done.
func (s *session) exchange(srv sasl.Server, resp []byte) error {
	for {
		chal, done, err := srv.Next(resp)
		if err != nil || done {
			return err
		}
		if err := s.reply("+ " + base64.StdEncoding.EncodeToString(chal)); err != nil {
			return ioError{err}
		}
		line, err := s.readLine()
		if err != nil {
			return ioError{err}
		}
		if line == "*" {
			return errCancelled
		}
		if resp, err = base64.StdEncoding.DecodeString(line); err != nil {
			return errBadBase64
		}
	}
}

// saslText is the -ERR text for a SASL failure that is not a wrong
// password.
func saslText(err error) string {
	switch {
	case errors.Is(err, errBadBase64):
		return "Invalid base64 in response"
	case errors.Is(err, errAuthzid):
		return "[AUTH] Authorization identity not supported"
	}
	return "Authentication failed: " + err.Error()
}

// ioError is a failure to talk to the client during a SASL exchange.
type ioError struct{ err error }

func (e ioError) Error() string { return e.err.Error() }
func (e ioError) Unwrap() error { return e.err }

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login), which go-sasl offers only as a client.
type loginServer struct {
	user string
	got  int // responses received
	done func(user, pass string)
}

// Next implements sasl.Server: ask for the user name unless the initial
// response carried it, then for the password.
func (l *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	if resp == nil && l.got == 0 {
		return []byte("Username:"), false, nil
	}
	if l.got++; l.got == 1 {
		l.user = string(resp)
		return []byte("Password:"), false, nil
	}
	l.done(l.user, string(resp))
	return nil, true, nil
}
