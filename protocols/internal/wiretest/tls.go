package wiretest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	stdtls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gatehouse test"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return stdtls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
})

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
