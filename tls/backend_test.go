package tls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	stdtls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned returns a self-signed leaf for name, like the certificate an
// Exchange server makes for itself at setup.
func selfSigned(t *testing.T, name string) stdtls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return stdtls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// fingerprint formats the SHA-256 of cert's leaf as administrators copy it:
// upper-case hex pairs with colons.
func fingerprint(cert stdtls.Certificate) string {
	sum := sha256.Sum256(cert.Certificate[0])
	pairs := make([]string, len(sum))
	for i, b := range sum {
		pairs[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(pairs, ":")
}

func backendServer(t *testing.T, cert stdtls.Certificate) string {
	return serveTLS(t, &stdtls.Config{Certificates: []stdtls.Certificate{cert}})
}

// A pinned fingerprint trusts exactly that self-signed back-end, whatever
// name it carries, and refuses any other certificate.
func TestBackendPinnedFingerprint(t *testing.T) {
	exchange := selfSigned(t, "EXCH01")
	impostor := selfSigned(t, "EXCH01")
	b := Backend{Mode: ModeTLS, Fingerprint: fingerprint(exchange)}
	cfg, err := b.ClientConfig("10.0.0.5", testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	exch01 := backendServer(t, exchange)
	if _, err := dialTLS(exch01, cfg); err != nil {
		t.Fatalf("pinned back-end refused: %v", err)
	}
	// The next connection resumes the session (the pin is checked again).
	cs, err := dialTLS(exch01, cfg)
	if err != nil || !cs.DidResume {
		t.Fatalf("second connection: %v, resumed %v", err, cs.DidResume)
	}
	_, err = dialTLS(backendServer(t, impostor), cfg)
	if err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("impostor: err = %v, want a fingerprint mismatch", err)
	}

	// Lower case without colons is the same pin.
	b.Fingerprint = strings.ToLower(strings.ReplaceAll(b.Fingerprint, ":", ""))
	cfg, _ = b.ClientConfig("", nil)
	if _, err := dialTLS(backendServer(t, exchange), cfg); err != nil {
		t.Fatalf("bare hex pin refused: %v", err)
	}
}

// ca_file trusts back-ends signed by that CA for the expected name; the
// default (system roots) and a wrong name are refused.
func TestBackendCAFile(t *testing.T) {
	ca := newTestCA(t, "internal CA")
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := backendServer(t, ca.issue(t, "mbx1.corp.example.test"))

	for _, tc := range []struct {
		name    string
		backend Backend
		dflt    string
		ok      bool
	}{
		{"ca file", Backend{Mode: ModeTLS, CAFile: file}, "mbx1.corp.example.test", true},
		{"server_name wins", Backend{Mode: ModeStartTLS, CAFile: file, ServerName: "mbx1.corp.example.test"}, "127.0.0.1", true},
		{"wrong name", Backend{Mode: ModeTLS, CAFile: file}, "mbx2.corp.example.test", false},
		{"system roots", Backend{Mode: ModeTLS}, "mbx1.corp.example.test", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.backend.ClientConfig(tc.dflt, testLog(t))
			if err != nil {
				t.Fatal(err)
			}
			_, err = dialTLS(addr, cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("dial: err = %v, want ok = %v", err, tc.ok)
			}
		})
	}
}

// insecure_skip_verify is honoured, and said out loud.
func TestBackendInsecureWarns(t *testing.T) {
	var logs syncBuffer
	cfg, err := Backend{Mode: ModeTLS, InsecureSkipVerify: true}.ClientConfig("mbx1", slogTo(&logs))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "insecure_skip_verify") {
		t.Fatalf("no warning logged:\n%s", logs.String())
	}
	if _, err := dialTLS(backendServer(t, selfSigned(t, "anything")), cfg); err != nil {
		t.Fatalf("insecure dial: %v", err)
	}
}

func TestBackendNoneHasNoConfig(t *testing.T) {
	cfg, err := Backend{}.ClientConfig("mbx1", nil)
	if cfg != nil || err != nil {
		t.Fatalf("mode none: %v, %v; want nil, nil", cfg, err)
	}
}

func TestBackendValidate(t *testing.T) {
	for _, tc := range []struct {
		b    Backend
		want string // "" = valid
	}{
		{Backend{}, ""},
		{Backend{Mode: ModeStartTLS}, ""},
		{Backend{Mode: "ssl"}, "mode"},
		{Backend{CAFile: "/ca.pem"}, "mode"},
		{Backend{Mode: ModeTLS, Fingerprint: "ab:cd"}, "fingerprint"},
		{Backend{Mode: ModeTLS, Fingerprint: strings.Repeat("zz", 32)}, "fingerprint"},
		{Backend{Mode: ModeTLS, Fingerprint: strings.Repeat("ab", 32), CAFile: "/ca.pem"}, "exclude"},
		{Backend{Mode: ModeTLS, InsecureSkipVerify: true, CAFile: "/ca.pem"}, "exclude"},
	} {
		err := tc.b.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: Validate() = %v, want %q", tc.b, err, tc.want)
		}
	}
}
