package pop3test

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

// wire is a raw POP3 conversation for transcript tests.
type wire struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// dial connects to s with every read and write bounded by testTimeout.
func dial(t *testing.T, s *Server) *wire {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, testTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { _ = c.Close() })
	return &wire{t: t, c: c, br: bufio.NewReader(c)}
}

// greeted dials s and reads its greeting.
func greeted(t *testing.T, s *Server) *wire {
	t.Helper()
	w := dial(t, s)
	w.expect("+OK " + s.Name + " POP3 ready")
	return w
}

// loggedIn is greeted plus a USER/PASS login.
func loggedIn(t *testing.T, s *Server, user, pass string) *wire {
	t.Helper()
	w := greeted(t, s)
	w.send("USER " + user)
	w.expect("+OK")
	w.send("PASS " + pass)
	w.expect("+OK " + s.Name + ": " + user + " has ")
	return w
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

// multi reads a "+OK" multi-line response and returns its body lines as
// sent (still dot-stuffed), without the final ".".
func (w *wire) multi() []string {
	w.t.Helper()
	w.expect("+OK")
	var body []string
	for {
		line := w.line()
		if line == "." {
			return body
		}
		body = append(body, line)
	}
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

// startTLS runs the client side of the handshake after "+OK" to STLS and
// continues the conversation inside TLS.
func (w *wire) startTLS(cfg *stdtls.Config) {
	w.t.Helper()
	if n := w.br.Buffered(); n != 0 {
		w.t.Fatalf("%d bytes arrived behind the STLS reply", n)
	}
	tc := stdtls.Client(w.c, cfg)
	if err := tc.Handshake(); err != nil {
		w.t.Fatalf("TLS handshake: %v", err)
	}
	w.c, w.br = tc, bufio.NewReader(tc)
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
		Subject:      pkix.Name{CommonName: "pop3test"},
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
// runs the server's code.
func assertGoroutinesGone(t *testing.T) {
	t.Helper()
	needles := [][]byte{[]byte("pop3test.(*Server)"), []byte("pop3test.(*session)")}
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
