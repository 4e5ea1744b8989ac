package pop3

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/maillogin"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// maxBackendLine bounds a back-end reply line before the splice.
const maxBackendLine = 4096

// leg is gatehouse's conversation, as a POP3 client, with one back-end.
type leg struct{ *maillogin.Leg }

// backendLogin runs the back-end side after the PROXY header and implicit
// TLS up to its answer to the login: greeting, STLS, XCLIENT, then
// USER/PASS or AUTH PLAIN. It returns the back-end's +OK; a -ERR is a
// *maillogin.RefusedError.
func (s *session) backendLogin(ml *maillogin.Leg, user, pass string) (ok string, err error) {
	l := leg{ml}
	if _, err := l.expectOK("greeting", ""); err != nil {
		return "", err
	}
	if s.f.BackendTLSMode == proxy.TLSStartTLS {
		if err := l.startTLS(); err != nil {
			return "", err
		}
	}
	if s.cfg.Forward == ForwardXClient {
		if _, err := l.expectOK("XCLIENT", s.xclient()); err != nil {
			return "", err
		}
	}
	return l.login(s.cfg.BackendLogin, user, pass)
}

// xclient is Dovecot's XCLIENT command carrying the client's address.
func (s *session) xclient() string {
	return fmt.Sprintf("XCLIENT ADDR=%s PORT=%d", s.Client.Addr(), s.Client.Port())
}

// startTLS upgrades the back-end connection with STLS (RFC 2595 section
// 4). A back-end that sends anything after its +OK is not trusted.
func (l leg) startTLS() error {
	if _, err := l.expectOK("STLS", "STLS"); err != nil {
		return err
	}
	return l.StartTLS("STLS")
}

// login sends the credentials and returns the back-end's +OK line.
func (l leg) login(method, user, pass string) (string, error) {
	if method == LoginPlain {
		ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		return l.credentials("AUTH PLAIN " + ir)
	}
	if _, err := l.credentials("USER " + user); err != nil {
		return "", err
	}
	return l.credentials("PASS " + pass)
}

// credentials sends a login command; a -ERR is a *maillogin.RefusedError.
func (l leg) credentials(cmd string) (string, error) {
	if err := l.send(cmd); err != nil {
		return "", err
	}
	line, err := l.ReadLine()
	switch {
	case err != nil:
		return "", err
	case strings.HasPrefix(line, "-ERR"):
		return "", refused(l.Name, line)
	case !isOK(line):
		return "", fmt.Errorf("back-end %s answered the login with %q", l.Name, line)
	}
	return line, nil
}

// expectOK sends cmd (unless empty) and wants a +OK.
func (l leg) expectOK(what, cmd string) (string, error) {
	if cmd != "" {
		if err := l.send(cmd); err != nil {
			return "", err
		}
	}
	line, err := l.ReadLine()
	if err != nil {
		return "", err
	}
	if !isOK(line) {
		return "", fmt.Errorf("back-end %s answered %s with %q", l.Name, what, line)
	}
	return line, nil
}

func (l leg) send(cmd string) error {
	if strings.ContainsAny(cmd, "\r\n") {
		return errors.New("credentials contain a line break")
	}
	return l.Send(cmd)
}

// isOK reports a positive reply (RFC 1939 section 3).
func isOK(line string) bool { return line == "+OK" || strings.HasPrefix(line, "+OK ") }
