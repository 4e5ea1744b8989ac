package maillogin

import (
	"encoding/base64"
	"errors"

	"github.com/emersion/go-sasl"
)

// SASL outcomes that are the client's doing, not a failed login.
var (
	// ErrCancelled is the client's "*" instead of a response.
	ErrCancelled = errors.New("authentication cancelled")
	// ErrBadBase64 is a response that is not base64.
	ErrBadBase64 = errors.New("invalid base64")
	// ErrAuthzid is a PLAIN authorization identity other than the user.
	ErrAuthzid = errors.New("authorization identity not supported")
	// ErrMechanism is a mechanism other than PLAIN and LOGIN.
	ErrMechanism = errors.New("unsupported authentication mechanism")
)

// IOError is a failure to talk to the client during a SASL exchange; Err
// is the read or write error.
type IOError struct{ Err error }

// Error implements error.
func (e *IOError) Error() string { return e.Err.Error() }

// Unwrap returns Err.
func (e *IOError) Unwrap() error { return e.Err }

// DecodeInitial decodes a SASL initial response; "=" is an empty one (RFC
// 4959 section 3, RFC 5034 section 4).
func DecodeInitial(ir string) ([]byte, error) {
	if ir == "=" {
		return []byte{}, nil
	}
	return base64.StdEncoding.DecodeString(ir)
}

// SASL runs the server side of PLAIN or LOGIN and returns the credentials.
// ir is nil when the client sent no initial response. Challenges go to the
// client as "+ base64" lines; readLine reads its responses, where "*"
// cancels (RFC 5034 section 4, RFC 9051 section 6.2.2). An authorization
// identity other than the user is refused with ErrAuthzid.
func (s *Session) SASL(mech string, ir []byte, readLine func() (string, error)) (user, pass string, err error) {
	var srv sasl.Server
	switch mech {
	case sasl.Plain:
		srv = sasl.NewPlainServer(func(identity, u, p string) error {
			if identity != "" && identity != u {
				return ErrAuthzid
			}
			user, pass = u, p
			return nil
		})
	case sasl.Login:
		srv = &loginServer{done: func(u, p string) { user, pass = u, p }}
	default:
		return "", "", ErrMechanism
	}
	return user, pass, s.exchange(srv, ir, readLine)
}

// exchange relays challenges and responses until srv is done.
func (s *Session) exchange(srv sasl.Server, resp []byte, readLine func() (string, error)) error {
	for {
		chal, done, err := srv.Next(resp)
		if err != nil || done {
			return err
		}
		if err := s.Reply("+ " + base64.StdEncoding.EncodeToString(chal)); err != nil {
			return &IOError{err}
		}
		line, err := readLine()
		if err != nil {
			return &IOError{err}
		}
		if line == "*" {
			return ErrCancelled
		}
		if resp, err = base64.StdEncoding.DecodeString(line); err != nil {
			return ErrBadBase64
		}
	}
}

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
