package exchangetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"

	stdtls "crypto/tls"
)

// selfSigned makes a certificate for name (when it can be a host name),
// localhost, the loopback addresses and the listener's own address. Like
// httptest's, it is its own CA, so a client can trust exactly it.
func selfSigned(name string, addr net.Addr) (stdtls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return stdtls.Certificate{}, fmt.Errorf("generating certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return stdtls.Certificate{}, fmt.Errorf("generating certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"exchangetest"}},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if isHostname(name) {
		tmpl.DNSNames = append(tmpl.DNSNames, name)
	}
	if tcp, ok := addr.(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() && !slices.ContainsFunc(tmpl.IPAddresses, tcp.IP.Equal) {
		tmpl.IPAddresses = append(tmpl.IPAddresses, tcp.IP) // 127.0.0.2 and the like
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return stdtls.Certificate{}, fmt.Errorf("creating self-signed certificate: %w", err)
	}
	return stdtls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// isHostname reports whether name can stand in a certificate's DNS names.
func isHostname(name string) bool {
	if name == "" || len(name) > 253 || name[0] == '-' || name[0] == '.' || net.ParseIP(name) != nil {
		return false
	}
	for _, r := range name {
		ok := r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !ok {
			return false
		}
	}
	return true
}
