package tls

import (
	stdtls "crypto/tls"
	"fmt"
	"slices"

	"github.com/mholt/acmez/v3"
)

// TLS modes of a listener or back-end.
const (
	// ModeNone is plaintext; an empty mode means the same.
	ModeNone = "none"
	// ModeImplicit is TLS from the first byte on a listener (465, 993, 995, 443).
	ModeImplicit = "implicit"
	// ModeStartTLS upgrades a plaintext session (SMTP STARTTLS, POP3 STLS,
	// IMAP STARTTLS).
	ModeStartTLS = "starttls"
	// ModeTLS is TLS from the first byte towards a back-end.
	ModeTLS = "tls"
)

// Listener configures the TLS of one listener.
type Listener struct {
	// Mode is "none", "implicit" or "starttls". Empty means "none".
	Mode string `yaml:"mode"`
	// Required, with mode starttls, refuses AUTH and login until STARTTLS
	// has happened. False means plaintext login is allowed.
	Required bool `yaml:"required"`
	// Certificates names the shared certificate set to serve. Empty means
	// the default set.
	Certificates string `yaml:"certificates"`
}

// Validate reports the first problem in l, naming the YAML key at fault.
func (l Listener) Validate() error {
	switch l.Mode {
	case "", ModeNone:
		if l.Required {
			return fmt.Errorf("required: needs mode starttls, not %q", l.Mode)
		}
		if l.Certificates != "" {
			return fmt.Errorf("certificates: %q set but the listener has no TLS", l.Certificates)
		}
	case ModeImplicit:
		if l.Required {
			return fmt.Errorf("required: mode implicit is always TLS; it applies to mode starttls only")
		}
	case ModeStartTLS:
	default:
		return fmt.Errorf("mode %q: want none, implicit or starttls", l.Mode)
	}
	return nil
}

// TLS is whether the listener speaks TLS at all (implicit or STARTTLS).
func (l Listener) TLS() bool {
	return l.Mode == ModeImplicit || l.Mode == ModeStartTLS
}

// cipherSuites are the TLS 1.2 suites a listener accepts: ECDHE key exchange
// with an AEAD cipher, nothing else. TLS 1.3 suites are fixed by crypto/tls
// and are all AEAD.
var cipherSuites = []uint16{
	stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	stdtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	stdtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	stdtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	stdtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	stdtls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// curves are the key exchanges offered: the X25519 + ML-KEM hybrid (TLS 1.3
// clients that know it), then X25519 and P-256.
var curves = []stdtls.CurveID{stdtls.X25519MLKEM768, stdtls.X25519, stdtls.CurveP256}

// serverConfig builds the listener policy around getCert. alpn lists the
// application protocols of the listener ("h2", "http/1.1" for HTTPS, none
// for mail). With acmeALPN the listener also answers the ACME TLS-ALPN-01
// challenge (RFC 8737).
//
// Session tickets stay on: SessionTicketKey is left unset so crypto/tls
// creates and rotates ticket keys itself, per returned Config.
func serverConfig(getCert func(*stdtls.ClientHelloInfo) (*stdtls.Certificate, error), acmeALPN bool, alpn []string) *stdtls.Config {
	cfg := &stdtls.Config{
		GetCertificate:   getCert,
		MinVersion:       stdtls.VersionTLS12,
		CipherSuites:     slices.Clone(cipherSuites),
		CurvePreferences: slices.Clone(curves),
		NextProtos:       slices.Clone(alpn),
		VerifyConnection: countHandshake,
	}
	if !acmeALPN {
		return cfg
	}
	if len(alpn) > 0 {
		// HTTPS clients always offer h2 or http/1.1, so one more protocol
		// in the list cannot make a handshake fail.
		cfg.NextProtos = append(cfg.NextProtos, acmez.ACMETLS1Protocol)
		return cfg
	}
	// A mail listener negotiates no ALPN, and crypto/tls refuses a client
	// whose offered protocols do not overlap NextProtos: a mail client that
	// offers "imap" or "smtp" would be refused if acme-tls/1 were listed.
	// Only the validation server's hello gets a config that speaks it.
	challenge := &stdtls.Config{
		GetCertificate: getCert,
		MinVersion:     stdtls.VersionTLS12,
		NextProtos:     []string{acmez.ACMETLS1Protocol},
	}
	cfg.GetConfigForClient = func(hello *stdtls.ClientHelloInfo) (*stdtls.Config, error) {
		if slices.Equal(hello.SupportedProtos, challenge.NextProtos) {
			return challenge, nil
		}
		return nil, nil
	}
	return cfg
}
