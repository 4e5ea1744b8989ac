package tls

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	stdtls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ioTimeout bounds every read, write and handshake in these tests.
const ioTimeout = 5 * time.Second

// testCA signs test certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf for names, valid from an hour ago for a day.
func (ca *testCA) issue(t *testing.T, names ...string) stdtls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return ca.issueKey(t, key, names...)
}

func (ca *testCA) issueKey(t *testing.T, key *ecdsa.PrivateKey, names ...string) stdtls.Certificate {
	return ca.issueValid(t, key, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), names...)
}

func (ca *testCA) issueValid(t *testing.T, key *ecdsa.PrivateKey, from, until time.Time, names ...string) stdtls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    from,
		NotAfter:     until,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return stdtls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// pool returns a pool that trusts only ca.
func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// writePair writes cert and its key as PEM files named base.crt and
// base.key in dir.
func writePair(t *testing.T, dir, base string, cert stdtls.Certificate) CertFile {
	t.Helper()
	f := CertFile{Cert: filepath.Join(dir, base+".crt"), Key: filepath.Join(dir, base+".key")}
	var chain bytes.Buffer
	for _, der := range cert.Certificate {
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	writeFile(t, f.Cert, chain.Bytes())
	writeFile(t, f.Key, keyPEM)
	return f
}

// writeFile replaces name's content the way an administrator's tooling does
// (write a new file, rename it over the old one).
func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// testLog returns a logger that writes to the test log, and drops what
// background goroutines log once the test is over.
func testLog(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, nil))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// listen returns a TCP listener on 127.0.0.1 with a free port, closed at the
// end of the test.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveTLS accepts on a new loopback listener with cfg, as serveTLSOn, and
// returns the listener's address.
func serveTLS(t *testing.T, cfg *stdtls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveTLSOn(t, ln, cfg)
	return ln.Addr().String()
}

// serveTLSOn accepts on ln with cfg until the end of the test: each
// connection gets a handshake and then "hello\n"; the server then echoes
// what it reads until the client closes.
func serveTLSOn(t *testing.T, ln net.Listener, cfg *stdtls.Config) {
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(ioTimeout))
				tc, err := ServerHandshake(c, cfg)
				if err != nil {
					return
				}
				io.WriteString(tc, "hello\n")
				io.Copy(tc, tc)
			}()
		}
	}()
}

// dialTLS connects to addr with cfg, reads the server's "hello" (which also
// takes in TLS 1.3 session tickets) and returns the connection state. The
// connection is closed.
func dialTLS(addr string, cfg *stdtls.Config) (stdtls.ConnectionState, error) {
	d := &net.Dialer{Timeout: ioTimeout}
	c, err := stdtls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return stdtls.ConnectionState{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return stdtls.ConnectionState{}, err
	}
	if line != "hello\n" {
		return stdtls.ConnectionState{}, errors.New("unexpected greeting " + line)
	}
	return c.ConnectionState(), nil
}

// servedLeaf dials addr with SNI serverName (none when empty), trusting
// roots, and returns the leaf the server presented.
func servedLeaf(t *testing.T, addr, serverName string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	cfg := &stdtls.Config{ServerName: serverName, RootCAs: roots}
	if serverName == "" {
		// No SNI: check the chain ourselves, as an MTA that verifies
		// would against the name it expects.
		cfg.InsecureSkipVerify = true
	}
	cs, err := dialTLS(addr, cfg)
	if err != nil {
		t.Fatalf("dial %s (SNI %q): %v", addr, serverName, err)
	}
	return cs.PeerCertificates[0]
}

// newTestManager starts a Manager for c that is closed at the end of the
// test.
func newTestManager(t *testing.T, c Certificates) *Manager {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := NewManager(ctx, c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// eventually polls cond every 20ms until it holds or d has passed.
func eventually(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// slogTo returns a text logger writing into w.
func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
