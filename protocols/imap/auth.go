package imap

import (
	"errors"
	"strings"

	"github.com/emersion/go-sasl"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/maillogin"
)

// authenticate serves AUTHENTICATE PLAIN and LOGIN (RFC 9051 section
// 6.2.2), with an initial response when the client sends one (SASL-IR,
// RFC 4959): the credentials are collected at the edge and used to log in
// on the back-end.
func (s *session) authenticate(cmd *command) (*maillogin.Handoff, bool) {
	if !s.loginAllowed() {
		return nil, s.Reply(cmd.tag+" NO [PRIVACYREQUIRED] Authentication is disabled before STARTTLS") != nil
	}
	if len(cmd.args) < 1 || len(cmd.args) > 2 || cmd.args[0].kind != kindAtom {
		return nil, s.Reply(cmd.tag+" BAD AUTHENTICATE takes a mechanism and an optional initial response") != nil
	}
	mech := strings.ToUpper(cmd.args[0].s)
	var ir []byte
	if len(cmd.args) == 2 {
		var err error
		if ir, err = decodeIR(cmd.args[1]); err != nil {
			return nil, s.Reply(cmd.tag+" BAD Invalid base64 in initial response") != nil
		}
	}
	user, pass, err := s.SASL(mech, ir, s.readLine)
	if err != nil {
		return nil, s.saslFailed(cmd.tag, err)
	}
	label := strings.ToLower(mech)
	if mech == sasl.Login {
		label = "authlogin" // "login" is the LOGIN command's
	}
	return s.login(cmd.tag, user, pass, label)
}

// saslFailed answers an AUTHENTICATE that yielded no credentials; it
// reports whether the session must end.
func (s *session) saslFailed(tag string, err error) bool {
	var ioErr *maillogin.IOError
	switch {
	case errors.Is(err, maillogin.ErrCancelled):
		return s.Reply(tag+" BAD AUTHENTICATE cancelled") != nil // RFC 9051 section 6.2.2
	case errors.Is(err, maillogin.ErrBadBase64):
		return s.Reply(tag+" BAD Invalid base64 in response") != nil
	case errors.Is(err, maillogin.ErrMechanism):
		return s.Reply(tag+" NO Unsupported authentication mechanism") != nil
	case errors.Is(err, maillogin.ErrAuthzid):
		return s.Reply(tag+" NO [AUTHENTICATIONFAILED] Authorization identity not supported") != nil
	case errors.As(err, &ioErr):
		s.readFailed(ioErr.Err)
		return true
	}
	return s.Reply(tag+" NO [AUTHENTICATIONFAILED] Malformed credentials") != nil
}

// decodeIR decodes an initial response, which must be an atom.
func decodeIR(a arg) ([]byte, error) {
	if a.kind != kindAtom {
		return nil, maillogin.ErrBadBase64
	}
	return maillogin.DecodeInitial(a.s)
}

// readLine reads one SASL response line.
func (s *session) readLine() (string, error) {
	if err := s.p.readLine(); err != nil {
		return "", err
	}
	return string(s.p.line), nil
}
