package tls

import (
	"bytes"
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// selfSignedListener serves a self-signed Manager's ServerConfig(alpn...)
// and returns its address and the roots that verify it.
func selfSignedListener(t *testing.T, alpn ...string) (string, *x509.CertPool) {
	storage := t.TempDir()
	m := newTestManager(t, Certificates{Storage: storage})
	var root bytes.Buffer
	if err := ExportCA(storage, &root); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(root.Bytes())
	return serveTLS(t, m.ServerConfig(alpn...)), roots
}

// Only TLS 1.2 and 1.3 are spoken, and TLS 1.2 only with ECDHE and AEAD.
func TestPolicyRefusesOldProtocolsAndCiphers(t *testing.T) {
	addr, roots := selfSignedListener(t)
	cbc := []uint16{
		stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		stdtls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
		stdtls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		stdtls.TLS_RSA_WITH_AES_128_GCM_SHA256, // AEAD, but no forward secrecy
	}
	for _, tc := range []struct {
		name     string
		min, max uint16
		suites   []uint16
		ok       bool
	}{
		{"TLS 1.0", stdtls.VersionTLS10, stdtls.VersionTLS10, nil, false},
		{"TLS 1.1", stdtls.VersionTLS11, stdtls.VersionTLS11, nil, false},
		{"TLS 1.2 without AEAD", stdtls.VersionTLS12, stdtls.VersionTLS12, cbc, false},
		{"TLS 1.2 with AES-GCM", stdtls.VersionTLS12, stdtls.VersionTLS12,
			[]uint16{stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, true},
		{"TLS 1.3", stdtls.VersionTLS13, stdtls.VersionTLS13, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := dialTLS(addr, &stdtls.Config{
				ServerName: "localhost", RootCAs: roots,
				MinVersion: tc.min, MaxVersion: tc.max, CipherSuites: tc.suites,
			})
			if (err == nil) != tc.ok {
				t.Fatalf("handshake err = %v, want ok = %v", err, tc.ok)
			}
			// The refusal must come from the server, not from our client.
			if !tc.ok && !strings.Contains(err.Error(), "remote error") {
				t.Fatalf("refused by the client itself: %v", err)
			}
			if tc.ok && cs.Version != tc.max {
				t.Fatalf("negotiated %s", stdtls.VersionName(cs.Version))
			}
		})
	}
	// A client that allows everything gets TLS 1.3.
	cs, err := dialTLS(addr, &stdtls.Config{ServerName: "localhost", RootCAs: roots, MinVersion: stdtls.VersionTLS10})
	if err != nil || cs.Version != stdtls.VersionTLS13 {
		t.Fatalf("default client: %v, %s", err, stdtls.VersionName(cs.Version))
	}
}

// A second connection resumes the first session, in TLS 1.2 and 1.3, and
// resumptions are counted.
func TestPolicySessionResumption(t *testing.T) {
	addr, roots := selfSignedListener(t)
	for _, version := range []uint16{stdtls.VersionTLS12, stdtls.VersionTLS13} {
		t.Run(stdtls.VersionName(version), func(t *testing.T) {
			cfg := &stdtls.Config{
				ServerName: "localhost", RootCAs: roots, MaxVersion: version,
				ClientSessionCache: stdtls.NewLRUClientSessionCache(4),
			}
			resumed := testutil.ToFloat64(handshakes.WithLabelValues("resumed"))
			first, err := dialTLS(addr, cfg)
			if err != nil || first.DidResume {
				t.Fatalf("first connection: %v, resumed %v", err, first.DidResume)
			}
			second, err := dialTLS(addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !second.DidResume {
				t.Fatal("second connection did not resume the session")
			}
			if got := testutil.ToFloat64(handshakes.WithLabelValues("resumed")) - resumed; got != 1 {
				t.Errorf("resumed handshakes counted: %v, want 1", got)
			}
		})
	}
}

// HTTPS listeners negotiate h2; mail listeners negotiate nothing, and a
// mail client that offers an ALPN name of its own is still served.
func TestPolicyALPN(t *testing.T) {
	https, roots := selfSignedListener(t, "h2", "http/1.1")
	cs, err := dialTLS(https, &stdtls.Config{ServerName: "localhost", RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil || cs.NegotiatedProtocol != "h2" {
		t.Fatalf("https: %v, negotiated %q", err, cs.NegotiatedProtocol)
	}
	imap, roots := selfSignedListener(t)
	cs, err = dialTLS(imap, &stdtls.Config{ServerName: "localhost", RootCAs: roots, NextProtos: []string{"imap"}})
	if err != nil || cs.NegotiatedProtocol != "" {
		t.Fatalf("imap client offering ALPN: %v, negotiated %q", err, cs.NegotiatedProtocol)
	}
}

func TestListenerValidate(t *testing.T) {
	for _, tc := range []struct {
		l  Listener
		ok bool
	}{
		{Listener{}, true},
		{Listener{Mode: ModeImplicit, Certificates: "mail"}, true},
		{Listener{Mode: ModeStartTLS, Required: true}, true},
		{Listener{Mode: ModeNone, Required: true}, false},
		{Listener{Mode: ModeImplicit, Required: true}, false},
		{Listener{Certificates: "mail"}, false},
		{Listener{Mode: "ssl"}, false},
	} {
		if err := tc.l.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v, want ok = %v", tc.l, err, tc.ok)
		}
	}
	if (Listener{}).TLS() || (Listener{Mode: ModeNone}).TLS() || !(Listener{Mode: ModeStartTLS}).TLS() {
		t.Error("TLS() wrong")
	}
}

// sslscanReport is the part of sslscan's XML report that the policy test
// reads.
type sslscanReport struct {
	Test struct {
		Protocols []struct {
			Type    string `xml:"type,attr"`
			Version string `xml:"version,attr"`
			Enabled string `xml:"enabled,attr"`
		} `xml:"protocol"`
		Ciphers []struct {
			SSLVersion string `xml:"sslversion,attr"`
			Name       string `xml:"cipher,attr"`
		} `xml:"cipher"`
		Groups []struct {
			Name string `xml:"name,attr"`
		} `xml:"group"`
	} `xml:"ssltest"`
}

// An outside scanner (Debian package sslscan) sees only TLS 1.2 and 1.3,
// ECDHE with AEAD ciphers, and the X25519 and P-256 groups.
func TestPolicySSLScan(t *testing.T) {
	scanner, err := exec.LookPath("sslscan")
	if err != nil {
		t.Fatal("sslscan not found: install the Debian package sslscan")
	}
	addr, _ := selfSignedListener(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, scanner, "--no-colour", "--xml=-", addr).Output()
	if err != nil {
		t.Fatalf("sslscan: %v\n%s", err, out)
	}
	var report sslscanReport
	if err := xml.Unmarshal(out[bytes.Index(out, []byte("<?xml")):], &report); err != nil {
		t.Fatalf("sslscan report: %v\n%s", err, out)
	}
	var enabled []string
	for _, p := range report.Test.Protocols {
		if p.Enabled == "1" {
			enabled = append(enabled, p.Type+p.Version)
		}
	}
	if !slices.Equal(enabled, []string{"tls1.2", "tls1.3"}) {
		t.Errorf("protocols enabled: %v, want tls1.2 and tls1.3 only", enabled)
	}
	if len(report.Test.Ciphers) == 0 {
		t.Fatalf("sslscan found no cipher:\n%s", out)
	}
	for _, c := range report.Test.Ciphers {
		aead := strings.Contains(c.Name, "GCM") || strings.Contains(c.Name, "CHACHA20")
		if !aead || c.SSLVersion == "TLSv1.2" && !strings.HasPrefix(c.Name, "ECDHE-") {
			t.Errorf("%s accepts %s", c.SSLVersion, c.Name)
		}
	}
	for _, g := range report.Test.Groups {
		if !strings.Contains(g.Name, "x25519") && !strings.Contains(g.Name, "P-256") {
			t.Errorf("group %s offered", g.Name)
		}
	}
}
