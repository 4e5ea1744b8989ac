package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	stdtls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tlsEcho is a TLS-terminating echo server, standing where a proxy in front
// of the echo back-end stands. It counts the handshakes it completed and
// keeps what the last ClientHello offered.
type tlsEcho struct {
	addr     string
	certFile string // PEM of the certificate it presents
	full     atomic.Int64
	resumed  atomic.Int64

	mu     sync.Mutex
	curves []stdtls.CurveID
	suites []uint16
}

// startTLSEcho serves reply behind TLS (session tickets on, as every proxy
// here has them) on a fresh 127.0.0.1 port until the test ends.
func startTLSEcho(t *testing.T, reply func(net.Conn)) *tlsEcho {
	t.Helper()
	cert, certFile := newCert(t)
	e := &tlsEcho{certFile: certFile}
	cfg := &stdtls.Config{
		Certificates: []stdtls.Certificate{cert},
		MinVersion:   stdtls.VersionTLS12,
		GetConfigForClient: func(h *stdtls.ClientHelloInfo) (*stdtls.Config, error) {
			e.mu.Lock()
			e.curves, e.suites = slices.Clone(h.SupportedCurves), slices.Clone(h.CipherSuites)
			e.mu.Unlock()
			return nil, nil
		},
		VerifyConnection: func(cs stdtls.ConnectionState) error {
			if cs.DidResume {
				e.resumed.Add(1)
			} else {
				e.full.Add(1)
			}
			return nil
		},
	}
	e.addr, _ = startServer(t, func(c net.Conn) {
		tc := stdtls.Server(c, cfg)
		tc.SetDeadline(time.Now().Add(testTimeout))
		if tc.Handshake() == nil {
			reply(tc)
		}
	})
	return e
}

// offered returns what the last ClientHello offered.
func (e *tlsEcho) offered() (curves []stdtls.CurveID, suites []uint16) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.curves, e.suites
}

// newCert makes a self-signed ECDSA P-256 certificate, as bench/tls.sh
// does with openssl, and writes it as PEM into the test's directory.
func newCert(t *testing.T) (stdtls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "bench.gatehouse.test"},
		DNSNames:     []string{"bench.gatehouse.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return stdtls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, file
}

// tlsrateFor runs a short load of two workers against e.
func tlsrateFor(t *testing.T, e *tlsEcho, version string, resume bool) tlsrateResult {
	t.Helper()
	o := tlsrateOptions{
		Target: e.addr, Version: version, Resume: resume, ServerName: "bench.gatehouse.test",
		CertFile: e.certFile, Workers: 2, Duration: 150 * time.Millisecond, Timeout: testTimeout,
	}
	r, err := tlsrateLoad(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Conns == 0 || r.Errors != 0 || r.FirstErr != nil || r.Rate() <= 0 || r.ClientCPU <= 0 {
		t.Fatalf("result %+v, want sessions, no errors and some client CPU", r)
	}
	return r
}

func TestTLSRateHandshakes(t *testing.T) {
	for _, tc := range []struct {
		version string
		resume  bool
		want    negotiated
	}{
		{"1.3", false, negotiated{stdtls.VersionTLS13, stdtls.TLS_AES_128_GCM_SHA256, stdtls.X25519}},
		{"1.3", true, negotiated{stdtls.VersionTLS13, stdtls.TLS_AES_128_GCM_SHA256, stdtls.X25519}},
		{"1.2", false, negotiated{stdtls.VersionTLS12, stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, stdtls.X25519}},
		{"1.2", true, negotiated{stdtls.VersionTLS12, stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, stdtls.X25519}},
	} {
		name := "TLS" + tc.version + map[bool]string{false: "-full", true: "-resumed"}[tc.resume]
		t.Run(name, func(t *testing.T) {
			e := startTLSEcho(t, echoConn)
			r := tlsrateFor(t, e, tc.version, tc.resume)
			if r.Params != tc.want || r.Other != 0 {
				t.Errorf("negotiated %v (+%d other), want %v for all", r.Params, r.Other, tc.want)
			}
			// The server agrees with the client on what kind of handshake
			// each session had; a resumed load primes its cache with one
			// full handshake before the clock starts.
			wantFull, wantResumed := r.Conns, int64(0)
			if tc.resume {
				wantFull, wantResumed = 1, r.Conns
			}
			if r.Resumed != wantResumed || e.full.Load() != wantFull || e.resumed.Load() != wantResumed {
				t.Errorf("client saw %d of %d resumed; server saw %d full, %d resumed; want %d full, %d resumed",
					r.Resumed, r.Conns, e.full.Load(), e.resumed.Load(), wantFull, wantResumed)
			}
		})
	}
}

func TestTLSRateOffersTheSameKeyExchangeToEveryServer(t *testing.T) {
	e := startTLSEcho(t, echoConn)
	tlsrateFor(t, e, "1.2", false)
	curves, suites := e.offered()
	// No ML-KEM hybrid, which OpenSSL 3.0 cannot answer, and in TLS 1.2
	// one suite only, so that no server can choose a cheaper one.
	if !slices.Equal(curves, []stdtls.CurveID{stdtls.X25519, stdtls.CurveP256}) {
		t.Errorf("offered groups %v, want X25519 and P-256 only", curves)
	}
	if !slices.Equal(suites, []uint16{stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}) {
		t.Errorf("offered suites %v, want ECDHE-ECDSA-AES128-GCM-SHA256 only", suites)
	}
}

func TestTLSRateRefusesAnotherCertificate(t *testing.T) {
	e := startTLSEcho(t, echoConn)
	_, e.certFile = newCert(t) // what the other proxies were given
	o := tlsrateOptions{Target: e.addr, Version: "1.3", CertFile: e.certFile,
		Workers: 1, Duration: 50 * time.Millisecond, Timeout: testTimeout}
	r, err := tlsrateLoad(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Conns != 0 || r.Errors == 0 || r.FirstErr == nil || !strings.Contains(r.FirstErr.Error(), "another certificate") {
		t.Fatalf("result %+v, want every session refused", r)
	}
}

func TestTLSRateCountsWrongEchoes(t *testing.T) {
	// A proxy that completes the handshake but does not reach the echo
	// back-end must not pass as a fast one.
	e := startTLSEcho(t, func(c net.Conn) {
		io.ReadFull(c, make([]byte, 8))
		io.WriteString(c, "notyours")
	})
	o := tlsrateOptions{Target: e.addr, Version: "1.3", Workers: 1, Duration: 50 * time.Millisecond, Timeout: testTimeout}
	r, err := tlsrateLoad(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Conns != 0 || r.Errors == 0 || r.FirstErr == nil || !strings.Contains(r.FirstErr.Error(), "echo returned") {
		t.Fatalf("result %+v, want every session counted as an error", r)
	}
}

func TestTLSRateResumeNeedsAFirstSession(t *testing.T) {
	// Nothing listens: the load fails before its clock starts rather than
	// timing failed dials.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	o := tlsrateOptions{Target: addr, Version: "1.3", Resume: true, Workers: 1, Duration: time.Minute, Timeout: testTimeout}
	if _, err := tlsrateLoad(context.Background(), o); err == nil || !strings.Contains(err.Error(), "first session") {
		t.Fatalf("err = %v, want the first session's failure", err)
	}
}

func TestTLSRatePrintsFigures(t *testing.T) {
	e := startTLSEcho(t, echoConn)
	var out strings.Builder
	args := []string{"tlsrate", "-target", e.addr, "-version", "1.3", "-cert", e.certFile, "-workers", "1", "-duration", "50ms"}
	if err := run(context.Background(), args, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"conns=", " errors=0 resumed=0 version=TLS1.3 suite=TLS_AES_128_GCM_SHA256 curve=X25519 other=0 client_cpu_us="} {
		if !strings.Contains(got, want) {
			t.Fatalf("printed %q, want %q in it", got, want)
		}
	}
}

func TestTLSRateRejectsUnknownVersion(t *testing.T) {
	err := run(context.Background(), []string{"tlsrate", "-target", "127.0.0.1:1", "-version", "1.1"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `-version "1.1"`) {
		t.Fatalf("err = %v, want -version refused", err)
	}
}
