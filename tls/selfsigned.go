package tls

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	stdtls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// Storage keys of the local CA, under the certificate storage directory.
const (
	localRootCert = "gatehouse/local-ca/root.crt"
	localRootKey  = "gatehouse/local-ca/root.key"
	localLeafCert = "gatehouse/local-ca/leaf.crt"
	localLeafKey  = "gatehouse/local-ca/leaf.key"
	localLeafPFX  = "gatehouse/local-ca/leaf.pfx"
	localLock     = "gatehouse_local_ca"
)

const (
	rootValidity = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// localCheckInterval is how often a running Manager checks that the
	// local leaf is not near its end.
	localCheckInterval = 12 * time.Hour
)

// localCA is a certificate authority generated once and kept in storage,
// with one leaf for the configured names plus 127.0.0.1 and ::1.
type localCA struct {
	storage *certmagic.FileStorage
	names   []string

	mu     sync.Mutex
	served []byte // DER of the leaf in service
	hash   string // its certmagic cache key
}

// caPair is a CA certificate and its key.
type caPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// refreshLocal puts the local CA's leaf in service, issuing a new one when
// there is none yet, the names changed, or the current one nears its end.
func (m *Manager) refreshLocal(ctx context.Context) error {
	l := m.local
	l.mu.Lock()
	defer l.mu.Unlock()
	cert, issued, err := l.leaf(ctx, time.Now())
	if err != nil {
		return fmt.Errorf("tls: self-signed (%s): %w", m.storage.Path, err)
	}
	if bytes.Equal(cert.Certificate[0], l.served) {
		return nil
	}
	hash, err := m.cacheReplacing(ctx, cert, l.hash)
	if err != nil {
		return fmt.Errorf("tls: self-signed: %w", err)
	}
	l.served, l.hash = cert.Certificate[0], hash
	if issued {
		m.log.Info("local CA issued a certificate", "names", certNames(cert.Leaf), "not_after", cert.Leaf.NotAfter)
		m.background(func(ctx context.Context) {
			m.runOnRenew(ctx, renewal{cert: cert, certFile: m.storage.Filename(localLeafCert),
				keyFile: m.storage.Filename(localLeafKey), pfxKey: localLeafPFX})
		})
	}
	return nil
}

// leaf returns the stored leaf when it is still good at now, or issues and
// stores a new one (issued is then true). The storage lock keeps instances
// sharing the directory from generating two CAs.
func (l *localCA) leaf(ctx context.Context, now time.Time) (cert stdtls.Certificate, issued bool, err error) {
	if err := l.storage.Lock(ctx, localLock); err != nil {
		return cert, false, fmt.Errorf("locking: %w", err)
	}
	defer l.storage.Unlock(ctx, localLock) // a lock file left behind goes stale by itself
	root, err := l.root(ctx, now)
	if err != nil {
		return cert, false, err
	}
	if cert, err := l.storedLeaf(ctx, root, now); err == nil {
		return cert, false, nil
	}
	cert, err = l.issueLeaf(ctx, root, now)
	return cert, err == nil, err
}

// root loads the CA from storage, creating it on first use (or when it has
// expired).
func (l *localCA) root(ctx context.Context, now time.Time) (caPair, error) {
	pair, err := l.loadPair(ctx, localRootCert, localRootKey)
	if err == nil && now.Before(pair.Leaf.NotAfter) {
		return caPair{cert: pair.Leaf, key: pair.PrivateKey.(crypto.Signer)}, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return caPair{}, fmt.Errorf("loading the local CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return caPair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{"gatehouse"}, CommonName: "gatehouse local CA " + randomHex(4)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(rootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	cert, err := l.store(ctx, tmpl, nil, key, localRootCert, localRootKey)
	if err != nil {
		return caPair{}, fmt.Errorf("creating the local CA: %w", err)
	}
	return caPair{cert: cert.Leaf, key: key}, nil
}

// storedLeaf returns the stored leaf if it is signed by root, holds exactly
// the wanted names and has more than a third of its life left.
func (l *localCA) storedLeaf(ctx context.Context, root caPair, now time.Time) (stdtls.Certificate, error) {
	cert, err := l.loadPair(ctx, localLeafCert, localLeafKey)
	if err != nil {
		return cert, err
	}
	leaf := cert.Leaf
	if err := leaf.CheckSignatureFrom(root.cert); err != nil {
		return cert, err
	}
	dns, ips := l.sans()
	if !slices.Equal(leaf.DNSNames, dns) || !slices.EqualFunc(leaf.IPAddresses, ips, net.IP.Equal) {
		return cert, errors.New("names changed")
	}
	if now.After(leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore) / 3)) {
		return cert, errors.New("near its end")
	}
	return cert, nil
}

// issueLeaf issues and stores a leaf for the configured names.
func (l *localCA) issueLeaf(ctx context.Context, root caPair, now time.Time) (stdtls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return stdtls.Certificate{}, err
	}
	dns, ips := l.sans()
	notAfter := now.Add(leafValidity)
	if notAfter.After(root.cert.NotAfter) {
		notAfter = root.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: l.names[0]},
		DNSNames:     dns,
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	cert, err := l.store(ctx, tmpl, &root, key, localLeafCert, localLeafKey)
	if err != nil {
		return cert, fmt.Errorf("issuing a certificate: %w", err)
	}
	return cert, nil
}

// sans returns the leaf's DNS names and IP addresses: the configured names
// plus 127.0.0.1 and ::1.
func (l *localCA) sans() (dns []string, ips []net.IP) {
	ips = []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	for _, n := range l.names {
		ip := net.ParseIP(n)
		switch {
		case ip == nil:
			dns = append(dns, n)
		case !slices.ContainsFunc(ips, ip.Equal):
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			ips = append(ips, ip)
		}
	}
	return dns, ips
}

// store signs tmpl (self-signed when parent is nil) and stores certificate
// and key in PEM.
func (l *localCA) store(ctx context.Context, tmpl *x509.Certificate, parent *caPair, key *ecdsa.PrivateKey, certKey, keyKey string) (stdtls.Certificate, error) {
	signer, issuer := crypto.Signer(key), tmpl
	if parent != nil {
		signer, issuer = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return stdtls.Certificate{}, err
	}
	keyPEM, err := certmagic.PEMEncodePrivateKey(key)
	if err != nil {
		return stdtls.Certificate{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := l.storage.Store(ctx, keyKey, keyPEM); err != nil {
		return stdtls.Certificate{}, err
	}
	if err := l.storage.Store(ctx, certKey, certPEM); err != nil {
		return stdtls.Certificate{}, err
	}
	return stdtls.X509KeyPair(certPEM, keyPEM)
}

// loadPair reads a certificate and key from storage.
func (l *localCA) loadPair(ctx context.Context, certKey, keyKey string) (stdtls.Certificate, error) {
	certPEM, err := l.storage.Load(ctx, certKey)
	if err != nil {
		return stdtls.Certificate{}, err
	}
	keyPEM, err := l.storage.Load(ctx, keyKey)
	if err != nil {
		return stdtls.Certificate{}, err
	}
	return stdtls.X509KeyPair(certPEM, keyPEM)
}

// randomSerial returns a random positive serial number of up to 128 bits.
func randomSerial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand)
	n := new(big.Int).SetBytes(b)
	return n.Add(n, big.NewInt(1))
}

// randomHex returns n random bytes in hex, to tell installations apart.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// ExportCA writes the PEM root certificate of the local CA kept in storage
// (empty means DefaultStorage()), for clients to trust: the
// `gatehouse tls export-ca` command.
func ExportCA(storage string, w io.Writer) error {
	if storage == "" {
		storage = DefaultStorage()
	}
	st := &certmagic.FileStorage{Path: storage}
	pemBytes, err := st.Load(context.Background(), localRootCert)
	if err != nil {
		return fmt.Errorf("tls: no local CA in %s (it is created on the first start with source self-signed): %w", storage, err)
	}
	if _, err := w.Write(pemBytes); err != nil {
		return fmt.Errorf("tls: export CA: %w", err)
	}
	return nil
}
