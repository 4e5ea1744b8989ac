package imaptest

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	stdtls "crypto/tls"
)

// testTimeout bounds every connection a test opens.
const testTimeout = 5 * time.Second

// boundedConn never lets a deadline move past the one set at dial time, so a
// client library that resets deadlines stays bounded.
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

// dialConn connects to s with every operation bounded by testTimeout.
func dialConn(t *testing.T, s *Server) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.Addr, testTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	c := &boundedConn{Conn: nc, limit: time.Now().Add(testTimeout)}
	_ = c.SetDeadline(c.limit)
	t.Cleanup(func() { _ = nc.Close() })
	return c
}

// wire is a raw IMAP conversation for transcript tests.
type wire struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// dial connects to s for a raw conversation.
func dial(t *testing.T, s *Server) *wire {
	t.Helper()
	c := dialConn(t, s)
	return &wire{t: t, c: c, br: bufio.NewReader(c)}
}

// send writes lines, each ended with CRLF, in one write.
func (w *wire) send(lines ...string) {
	w.t.Helper()
	if _, err := w.c.Write([]byte(strings.Join(lines, "\r\n") + "\r\n")); err != nil {
		w.t.Fatalf("write %q: %v", lines, err)
	}
}

// line reads one response line without its CRLF.
func (w *wire) line() string {
	w.t.Helper()
	line, err := w.br.ReadString('\n')
	if err != nil {
		w.t.Fatalf("read: %q, %v", line, err)
	}
	if !strings.HasSuffix(line, "\r\n") {
		w.t.Fatalf("line %q does not end in CRLF", line)
	}
	return strings.TrimSuffix(line, "\r\n")
}

// expect reads one line and checks that it starts with prefix.
func (w *wire) expect(prefix string) string {
	w.t.Helper()
	line := w.line()
	if !strings.HasPrefix(line, prefix) {
		w.t.Fatalf("got %q, want a line starting %q", line, prefix)
	}
	return line
}

// expectEOF checks that the server closed the connection with nothing more.
func (w *wire) expectEOF() {
	w.t.Helper()
	line, err := w.br.ReadString('\n')
	if err == nil || isTimeout(err) {
		w.t.Fatalf("read %q, %v; want the connection closed", line, err)
	}
}

// expectSilence checks that nothing arrives for a short while.
func (w *wire) expectSilence() {
	w.t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	line, err := w.br.ReadString('\n')
	if !isTimeout(err) {
		w.t.Fatalf("read %q, %v; want silence", line, err)
	}
	_ = w.c.SetReadDeadline(time.Now().Add(testTimeout))
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
		Subject:      pkix.Name{CommonName: "imaptest"},
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

// closeWithin runs closeServer and fails the test if it does not return in
// time.
func closeWithin(t *testing.T, closeServer func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		closeServer()
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Fatal("Close did not return")
	}
}

// assertGoroutinesGone fails if, shortly after Close, any goroutine still
// runs the server's or go-imap's server code.
func assertGoroutinesGone(t *testing.T) {
	t.Helper()
	needles := [][]byte{[]byte("imaptest.(*"), []byte("imaptest.holdSilently"), []byte("imapserver.(*")}
	deadline := time.Now().Add(2 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := buf[:runtime.Stack(buf, true)]
		var found []byte
		for _, n := range needles {
			if i := bytes.Index(stacks, n); i >= 0 {
				found = stacks[max(0, i-200):min(len(stacks), i+200)]
			}
		}
		if found == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server goroutine still running after Close:\n%s", found)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
