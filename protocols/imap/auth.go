package imap

import (
	"encoding/base64"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
)

// SASL outcomes that are the client's doing, not a failed login.
var (
	errCancelled = errors.New("authentication cancelled")
	errBadBase64 = errors.New("invalid base64")
	errAuthzid   = errors.New("authorization identity not supported")
	errMechanism = errors.New("unsupported authentication mechanism")
)

// authenticate serves AUTHENTICATE PLAIN and LOGIN (RFC 9051 section
// 6.2.2), with an initial response when the client sends one (SASL-IR,
// RFC 4959): the credentials are collected at the edge and used to log in
// on the back-end.
func (s *session) authenticate(cmd *command) (*handoff, bool) {
	if !s.loginAllowed() {
		return nil, s.reply(cmd.tag+" NO [PRIVACYREQUIRED] Authentication is disabled before STARTTLS") != nil
	}
	if len(cmd.args) < 1 || len(cmd.args) > 2 || cmd.args[0].kind != kindAtom {
		return nil, s.reply(cmd.tag+" BAD AUTHENTICATE takes a mechanism and an optional initial response") != nil
	}
	mech := strings.ToUpper(cmd.args[0].s)
	var ir []byte
	if len(cmd.args) == 2 {
		var err error
		if ir, err = decodeIR(cmd.args[1]); err != nil {
			return nil, s.reply(cmd.tag+" BAD Invalid base64 in initial response") != nil
		}
	}
	user, pass, err := s.sasl(mech, ir)
	switch {
	case errors.Is(err, errCancelled):
		return nil, s.reply(cmd.tag+" BAD AUTHENTICATE cancelled") != nil // RFC 9051 section 6.2.2
	case errors.Is(err, errBadBase64):
		return nil, s.reply(cmd.tag+" BAD Invalid base64 in response") != nil
	case errors.Is(err, errMechanism):
		return nil, s.reply(cmd.tag+" NO Unsupported authentication mechanism") != nil
	case errors.Is(err, errAuthzid):
		return nil, s.reply(cmd.tag+" NO [AUTHENTICATIONFAILED] Authorization identity not supported") != nil
	case errors.As(err, new(ioError)):
		s.readFailed(errors.Unwrap(err))
		return nil, true
	case err != nil:
		return nil, s.reply(cmd.tag+" NO [AUTHENTICATIONFAILED] Malformed credentials") != nil
	}
	label := strings.ToLower(mech)
	if mech == sasl.Login {
		label = "authlogin" // "login" is the LOGIN command's
	}
	return s.login(cmd.tag, user, pass, label)
}

// decodeIR decodes an initial response; "=" is an empty one (RFC 4959
// section 3).
func decodeIR(a arg) ([]byte, error) {
	if a.kind != kindAtom {
		return nil, errBadBase64
	}
	if a.s == "=" {
		return []byte{}, nil
	}
	return base64.StdEncoding.DecodeString(a.s)
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
		return "", "", errMechanism
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
		if err := s.p.readLine(); err != nil {
			return ioError{err}
		}
		line := string(s.p.line)
		if line == "*" {
			return errCancelled
		}
		if resp, err = base64.StdEncoding.DecodeString(line); err != nil {
			return errBadBase64
		}
	}
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
