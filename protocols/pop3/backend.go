package pop3

import (
	"bufio"
	stdtls "crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// maxBackendLine bounds a back-end reply line before the splice.
const maxBackendLine = 4096

// leg is gatehouse's conversation, as a POP3 client, with one back-end.
type leg struct {
	tls  *stdtls.Config // the back-end TLS config, with this back-end's name
	conn net.Conn
	r    *bufio.Reader
	name string
}

// dialLogin dials the route's back-ends in order and logs in on the first
// that answers. A login refusal is a *refusedError.
func (s *session) dialLogin(res proxy.RouteResult, user, pass string) (*handoff, error) {
	conn, b, err := s.f.Pool.DialOrder(s.ctx, res.Order)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(s.cfg.LoginTimeout))
	l := &leg{conn: conn, name: b.Name, tls: tls.ForAddr(s.f.BackendTLS, b.Addr)}
	ok, err := s.backendLogin(l, user, pass)
	if err != nil {
		l.conn.Close()
		return nil, err
	}
	return &handoff{be: l.conn, beR: l.r, b: b, ok: ok}, nil
}

// backendLogin runs the back-end side up to its answer to the login:
// PROXY header, TLS, greeting, STLS, XCLIENT, then USER/PASS or AUTH PLAIN.
func (s *session) backendLogin(l *leg, user, pass string) (ok string, err error) {
	f := s.f
	if f.ProxyVersion != 0 {
		if err := proxy.WriteProxyHeader(l.conn, f.ProxyVersion, s.raw.RemoteAddr(), s.raw.LocalAddr()); err != nil {
			return "", err
		}
	}
	if f.BackendTLSMode == TLSBackend {
		tc := stdtls.Client(l.conn, l.tls)
		if err := tc.Handshake(); err != nil {
			return "", fmt.Errorf("tls to %s: %w", l.name, err)
		}
		l.conn = tc
	}
	l.r = bufio.NewReaderSize(l.conn, maxBackendLine)
	if _, err := l.expectOK("greeting", ""); err != nil {
		return "", err
	}
	if f.BackendTLSMode == TLSStartTLS {
		if err := l.startTLS(l.tls); err != nil {
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
	return fmt.Sprintf("XCLIENT ADDR=%s PORT=%d", s.client.Addr(), s.client.Port())
}

// startTLS upgrades the back-end connection with STLS (RFC 2595 section
// 4). A back-end that sends anything after its +OK is not trusted.
func (l *leg) startTLS(cfg *stdtls.Config) error {
	if _, err := l.expectOK("STLS", "STLS"); err != nil {
		return err
	}
	tc, discarded, err := tls.ClientStartTLS(l.conn, l.r, cfg)
	if err != nil {
		return err
	}
	if discarded > 0 {
		return fmt.Errorf("back-end %s sent %d bytes after its STLS go-ahead", l.name, discarded)
	}
	l.conn, l.r = tc, bufio.NewReaderSize(tc, maxBackendLine)
	return nil
}

// login sends the credentials and returns the back-end's +OK line.
func (l *leg) login(method, user, pass string) (string, error) {
	if method == LoginPlain {
		ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		return l.credentials("AUTH PLAIN " + ir)
	}
	if _, err := l.credentials("USER " + user); err != nil {
		return "", err
	}
	return l.credentials("PASS " + pass)
}

// credentials sends a login command; a -ERR is a *refusedError.
func (l *leg) credentials(cmd string) (string, error) {
	if err := l.send(cmd); err != nil {
		return "", err
	}
	line, err := l.line()
	switch {
	case err != nil:
		return "", err
	case strings.HasPrefix(line, "-ERR"):
		return "", &refusedError{backend: l.name, line: line}
	case !isOK(line):
		return "", fmt.Errorf("back-end %s answered the login with %q", l.name, line)
	}
	return line, nil
}

// expectOK sends cmd (unless empty) and wants a +OK.
func (l *leg) expectOK(what, cmd string) (string, error) {
	if cmd != "" {
		if err := l.send(cmd); err != nil {
			return "", err
		}
	}
	line, err := l.line()
	if err != nil {
		return "", err
	}
	if !isOK(line) {
		return "", fmt.Errorf("back-end %s answered %s with %q", l.name, what, line)
	}
	return line, nil
}

func (l *leg) send(cmd string) error {
	if strings.ContainsAny(cmd, "\r\n") {
		return errors.New("credentials contain a line break")
	}
	if _, err := l.conn.Write([]byte(cmd + "\r\n")); err != nil {
		return fmt.Errorf("back-end %s: %w", l.name, err)
	}
	return nil
}

func (l *leg) line() (string, error) {
	b, err := l.r.ReadSlice('\n')
	if err != nil {
		return "", fmt.Errorf("back-end %s: %w", l.name, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// isOK reports a positive reply (RFC 1939 section 3).
func isOK(line string) bool { return line == "+OK" || strings.HasPrefix(line, "+OK ") }
