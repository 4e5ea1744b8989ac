package pop3test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-sasl"
)

var (
	errAuthFailed    = errors.New("pop3test: authentication failed")
	errAuthCancelled = errors.New("pop3test: authentication cancelled")
	errBadBase64     = errors.New("pop3test: invalid base64 in SASL response")
)

// cmdAuth runs "AUTH mechanism [initial-response]" (RFC 5034). A bare
// "AUTH" lists the mechanisms, as Dovecot and Exchange answer it.
func (s *session) cmdAuth(arg string) {
	mech, ir, hasIR := strings.Cut(arg, " ")
	if mech == "" {
		s.w.WriteString("+OK\r\n" + sasl.Plain + "\r\n.\r\n")
		s.flush()
		return
	}
	if !strings.EqualFold(mech, sasl.Plain) {
		s.fail("unsupported authentication mechanism")
		return
	}
	var resp []byte // nil: no initial response, the server asks for one
	if hasIR {
		var err error
		if resp, err = decodeResponse(ir); err != nil {
			s.fail("invalid base64 in initial response")
			return
		}
	}
	user, err := s.plain(resp)
	switch {
	case err == nil:
		s.open(user, sasl.Plain)
	case errors.Is(err, errAuthCancelled):
		s.fail("authentication cancelled")
	case errors.Is(err, errBadBase64):
		s.fail("invalid base64 in response")
	case s.done:
		// the connection failed mid-exchange; nothing more to say
	default:
		s.log.Info("pop3test: AUTH PLAIN failed", "err", err)
		s.fail("[AUTH] authentication failed")
	}
}

// plain runs go-sasl's PLAIN server, sending its challenges as "+ <base64>"
// continuation lines, and returns the authenticated user.
func (s *session) plain(resp []byte) (string, error) {
	var user string
	server := sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return errAuthFailed
		}
		if !s.srv.checkPassword(username, password) {
			return errAuthFailed
		}
		user = username
		return nil
	})
	for {
		challenge, done, err := server.Next(resp)
		if err != nil {
			return "", err
		}
		if done {
			return user, nil
		}
		s.reply("+ %s", base64.StdEncoding.EncodeToString(challenge))
		line, err := s.readLine()
		if err != nil {
			s.done = true
			return "", err
		}
		if line == "*" { // RFC 5034 §4: the client cancels
			return "", errAuthCancelled
		}
		if resp, err = decodeResponse(line); err != nil {
			return "", err
		}
	}
}

// decodeResponse decodes a SASL response line; "=" is an empty response.
func decodeResponse(line string) ([]byte, error) {
	if line == "=" {
		return []byte{}, nil
	}
	b, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadBase64, err)
	}
	return b, nil
}
