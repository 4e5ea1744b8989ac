package maillogin

import (
	"bufio"
	stdtls "crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// Leg is gatehouse's conversation, as a client, with one back-end before
// the splice.
type Leg struct {
	Conn    net.Conn       // the back-end connection (TLS or raw)
	R       *bufio.Reader  // reads Conn
	Name    string         // the back-end's name, for errors
	TLS     *stdtls.Config // the back-end TLS config, with this back-end's name
	maxLine int
}

// dialLogin dials the route's back-ends in order and logs in on the first
// that answers. A login refusal is a *RefusedError.
func (s *Session) dialLogin(res proxy.RouteResult, user, pass string, login BackendLogin) (*Handoff, string, error) {
	conn, b, err := s.f.Pool.DialOrder(s.Ctx, res.Order)
	if err != nil {
		return nil, "", err
	}
	conn.SetDeadline(time.Now().Add(s.f.LoginTimeout))
	l := &Leg{Conn: conn, Name: b.Name, TLS: tls.ForAddr(s.f.BackendTLS, b.Addr), maxLine: s.f.MaxBackendLine}
	var ok string
	if err = s.open(l); err == nil {
		ok, err = login(l, user, pass)
	}
	if err != nil {
		l.Conn.Close()
		return nil, "", err
	}
	return &Handoff{l: l, b: b}, ok, nil
}

// open starts the back-end side: the PROXY header and implicit TLS.
func (s *Session) open(l *Leg) error {
	if v := s.f.ProxyVersion; v != 0 {
		if err := proxy.WriteProxyHeader(l.Conn, v, s.Raw.RemoteAddr(), s.Raw.LocalAddr()); err != nil {
			return err
		}
	}
	if s.f.BackendTLSMode == proxy.TLSImplicit {
		tc := stdtls.Client(l.Conn, l.TLS)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("tls to %s: %w", l.Name, err)
		}
		l.Conn = tc
	}
	l.R = bufio.NewReaderSize(l.Conn, l.maxLine)
	return nil
}

// Send writes one command line, CRLF added.
func (l *Leg) Send(line string) error {
	if _, err := l.Conn.Write([]byte(line + "\r\n")); err != nil {
		return fmt.Errorf("back-end %s: %w", l.Name, err)
	}
	return nil
}

// ReadLine reads one reply line and returns it without its line end.
func (l *Leg) ReadLine() (string, error) {
	b, err := l.R.ReadSlice('\n')
	if err != nil {
		return "", fmt.Errorf("back-end %s: %w", l.Name, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// StartTLS upgrades the connection after the back-end's go-ahead to verb
// (STARTTLS, STLS). A back-end that sent anything after its go-ahead is
// not trusted.
func (l *Leg) StartTLS(verb string) error {
	tc, discarded, err := tls.ClientStartTLS(l.Conn, l.R, l.TLS)
	if err != nil {
		return err
	}
	if discarded > 0 {
		return fmt.Errorf("back-end %s sent %d bytes after its %s go-ahead", l.Name, discarded, verb)
	}
	l.Conn, l.R = tc, bufio.NewReaderSize(tc, l.maxLine)
	return nil
}
