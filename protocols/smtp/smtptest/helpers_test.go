package smtptest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	stdtls "crypto/tls"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/wiretest"

	gosmtp "github.com/emersion/go-smtp"
)

// testTimeout bounds every connection a test opens.
const testTimeout = wiretest.Wait

// boundedConn never lets a deadline move past the one set at dial time, so a
// client library that resets deadlines (go-smtp sets minutes) stays bounded.
type boundedConn struct {
	net.Conn
	limit time.Time
}

func (c *boundedConn) clamp(t time.Time) time.Time {
	if t.IsZero() || t.After(c.limit) {
		return c.limit
	}
	return t
}

func (c *boundedConn) SetDeadline(t time.Time) error     { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *boundedConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c *boundedConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

// dial connects to addr with every operation bounded by testTimeout.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := &boundedConn{Conn: nc, limit: time.Now().Add(testTimeout)}
	_ = c.SetDeadline(c.limit)
	t.Cleanup(func() { _ = nc.Close() })
	return c
}

// client opens a go-smtp client on a bounded connection to s.
func client(t *testing.T, s *Server) *gosmtp.Client {
	t.Helper()
	c := gosmtp.NewClient(dial(t, s.Addr))
	c.CommandTimeout = testTimeout
	c.SubmissionTimeout = testTimeout
	return c
}

// wire is a raw SMTP conversation for transcript tests.
type wire struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func rawDial(t *testing.T, s *Server) *wire {
	t.Helper()
	c := dial(t, s.Addr)
	return &wire{t: t, c: c, br: bufio.NewReader(c)}
}

// send writes lines, each ended with CRLF, in one write.
func (w *wire) send(lines ...string) {
	w.t.Helper()
	if _, err := w.c.Write([]byte(strings.Join(lines, "\r\n") + "\r\n")); err != nil {
		w.t.Fatalf("write %q: %v", lines, err)
	}
}

// reply reads one (possibly multi-line) reply and returns its lines.
func (w *wire) reply() []string {
	w.t.Helper()
	var lines []string
	for {
		line, err := w.br.ReadString('\n')
		if err != nil {
			w.t.Fatalf("read reply after %q: %v", lines, err)
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return lines
		}
	}
}

// expect reads one reply and checks that its last line starts with prefix.
func (w *wire) expect(prefix string) []string {
	w.t.Helper()
	lines := w.reply()
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, prefix) {
		w.t.Fatalf("reply %q, want one starting %q", lines, prefix)
	}
	return lines
}

// expectEOF checks that the server closed the connection with nothing more.
func (w *wire) expectEOF() {
	w.t.Helper()
	line, err := w.br.ReadString('\n')
	if err == nil || isTimeout(err) {
		w.t.Fatalf("read %q, %v; want the connection closed", line, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tlsConfigs returns a server config with a fresh self-signed certificate
// for 127.0.0.1, and a client config that trusts exactly that certificate.
func tlsConfigs(t *testing.T) (server, client *stdtls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "smtptest"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &stdtls.Config{Certificates: []stdtls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	return server, &stdtls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

// assertGoroutinesGone fails if, shortly after Close, any goroutine still
// runs the server's, its listener's or go-smtp's code.
func assertGoroutinesGone(t *testing.T) {
	t.Helper()
	wiretest.GoroutinesGone(t, "smtptest.(*", "testserver.(*", "testserver.holdSilently", "go-smtp.(*")
}
