package tls

import (
	"crypto/sha256"
	"crypto/subtle"
	stdtls "crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
)

// Backend configures TLS from gatehouse to one back-end.
type Backend struct {
	// Mode is "none", "tls" (TLS from the first byte) or "starttls".
	// Empty means "none".
	Mode string `yaml:"mode"`
	// CAFile is a PEM file of the roots that sign the back-end's
	// certificate. Empty means the system roots.
	CAFile string `yaml:"ca_file"`
	// Fingerprint pins the SHA-256 of the back-end's leaf certificate, hex
	// with or without colons; chain and name are then not checked (the safe
	// way to trust an Exchange self-signed certificate). Empty means no pin.
	Fingerprint string `yaml:"fingerprint"`
	// InsecureSkipVerify accepts any certificate. False means verify; true
	// is logged as a warning whenever a client config is built.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// ServerName is the name sent as SNI and verified in the certificate.
	// Empty means the default the caller passes (usually the back-end's
	// host).
	ServerName string `yaml:"server_name"`
}

// backendSessions is how many TLS sessions to one back-end are kept for
// resumption.
const backendSessions = 64

// Validate reports the first problem in b, naming the YAML key at fault.
func (b Backend) Validate() error {
	switch b.Mode {
	case "", ModeNone:
		if b.CAFile != "" || b.Fingerprint != "" || b.InsecureSkipVerify || b.ServerName != "" {
			return errors.New("mode: TLS settings given but mode is none")
		}
		return nil
	case ModeTLS, ModeStartTLS:
	default:
		return fmt.Errorf("mode %q: want none, tls or starttls", b.Mode)
	}
	set := 0
	for _, on := range []bool{b.CAFile != "", b.Fingerprint != "", b.InsecureSkipVerify} {
		if on {
			set++
		}
	}
	if set > 1 {
		return errors.New("ca_file, fingerprint and insecure_skip_verify exclude each other")
	}
	if b.Fingerprint != "" {
		if _, err := parseFingerprint(b.Fingerprint); err != nil {
			return fmt.Errorf("fingerprint: %w", err)
		}
	}
	return nil
}

// ClientConfig builds the client TLS config for the back-end: system roots
// by default, the roots of CAFile, or the pinned Fingerprint; TLS 1.2 at
// least; sessions resumed. It returns nil for mode none. defaultServerName
// is used when ServerName is empty. Build it once per back-end and share it,
// so that its session cache is shared too.
func (b Backend) ClientConfig(defaultServerName string, log *slog.Logger) (*stdtls.Config, error) {
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("backend tls: %w", err)
	}
	if b.Mode == "" || b.Mode == ModeNone {
		return nil, nil
	}
	cfg := &stdtls.Config{
		ServerName:         b.ServerName,
		MinVersion:         stdtls.VersionTLS12,
		ClientSessionCache: stdtls.NewLRUClientSessionCache(backendSessions),
	}
	if cfg.ServerName == "" {
		cfg.ServerName = defaultServerName
	}
	switch {
	case b.Fingerprint != "":
		want, _ := parseFingerprint(b.Fingerprint) // checked by Validate
		cfg.InsecureSkipVerify = true              // replaced by the pin below
		cfg.VerifyConnection = pinLeaf(want)
	case b.CAFile != "":
		pool, err := loadPool(b.CAFile)
		if err != nil {
			return nil, fmt.Errorf("backend tls: ca_file: %w", err)
		}
		cfg.RootCAs = pool
	case b.InsecureSkipVerify:
		cfg.InsecureSkipVerify = true
		logger(log).Warn("back-end certificate is not verified (insecure_skip_verify)",
			"server_name", cfg.ServerName)
	}
	return cfg, nil
}

// pinLeaf returns a VerifyConnection hook that accepts only a leaf whose
// SHA-256 is want.
func pinLeaf(want []byte) func(stdtls.ConnectionState) error {
	return func(cs stdtls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("back-end sent no certificate")
		}
		got := sha256.Sum256(cs.PeerCertificates[0].Raw)
		if subtle.ConstantTimeCompare(got[:], want) != 1 {
			return fmt.Errorf("back-end certificate fingerprint %s does not match the pinned %s",
				hex.EncodeToString(got[:]), hex.EncodeToString(want))
		}
		return nil
	}
}

// parseFingerprint decodes a SHA-256 fingerprint written as hex, with or
// without colons, in either case.
func parseFingerprint(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	if err != nil {
		return nil, fmt.Errorf("%q is not hex: %w", s, err)
	}
	if len(b) != sha256.Size {
		return nil, fmt.Errorf("%q has %d bytes, a SHA-256 fingerprint has %d", s, len(b), sha256.Size)
	}
	return b, nil
}

// loadPool reads a PEM file of certificates into a pool.
func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// logger returns log, or slog.Default() when log is nil.
func logger(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.Default()
	}
	return log
}

// ForAddr returns cfg with ServerName set to the host of addr ("host:port")
// when cfg names none, so that one back-end TLS config serves every
// back-end of a pool; cfg itself when it names one, or is nil.
func ForAddr(cfg *stdtls.Config, addr string) *stdtls.Config {
	if cfg == nil || cfg.ServerName != "" {
		return cfg
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	c := cfg.Clone()
	c.ServerName = host
	return c
}
