package wiretest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	stdtls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Certificate is a self-signed certificate for 127.0.0.1 and localhost,
// made once per test binary.
var Certificate = sync.OnceValue(func() stdtls.Certificate {
	cert, err := selfSigned(big.NewInt(1), "gatehouse test", []string{"localhost"})
	if err != nil {
		panic(err)
	}
	return cert
})

// NewCertificate makes a fresh self-signed certificate named cn, for
// 127.0.0.1 and dnsNames, with a serial number no earlier one has.
func NewCertificate(t testing.TB, cn string, dnsNames ...string) stdtls.Certificate {
	t.Helper()
	cert, err := selfSigned(big.NewInt(time.Now().UnixNano()), cn, dnsNames)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// selfSigned makes a P-256 server certificate for 127.0.0.1 and dnsNames,
// valid from an hour ago to an hour from now.
func selfSigned(serial *big.Int, cn string, dnsNames []string) (stdtls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return stdtls.Certificate{}, fmt.Errorf("generating a key for %s: %w", cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dnsNames,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return stdtls.Certificate{}, fmt.Errorf("signing a certificate for %s: %w", cn, err)
	}
	return stdtls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// ServerTLS serves Certificate.
func ServerTLS() *stdtls.Config {
	return &stdtls.Config{Certificates: []stdtls.Certificate{Certificate()}, MinVersion: stdtls.VersionTLS12}
}

// ClientTLS trusts exactly Certificate and expects the name localhost.
func ClientTLS() *stdtls.Config {
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(Certificate().Certificate[0])
	pool.AddCert(leaf)
	return &stdtls.Config{RootCAs: pool, ServerName: "localhost"}
}

// CertPEM writes Certificate to a PEM file a real client can trust, and
// returns its path.
func CertPEM(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	WriteFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: Certificate().Certificate[0]})))
	return path
}

// CertFiles writes a fresh self-signed certificate for localhost and
// dnsNames, valid from two days before notAfter until notAfter, and its
// key, as the PEM files base.crt and base.key in dir; it returns their
// paths. For tests of configurations that name certificate files.
func CertFiles(t testing.TB, dir, base string, notAfter time.Time, dnsNames ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     append([]string{"localhost"}, dnsNames...),
		NotBefore:    notAfter.Add(-48 * time.Hour),
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	WriteFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	WriteFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
}
