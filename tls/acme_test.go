package tls

import (
	"context"
	stdtls "crypto/tls"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

const mailName = "mail.gatehouse.test"

// acmeConfig is a certificate set ordered from p into a new storage
// directory, answering only the challenge given, on ports that the test's
// own listeners hold.
func acmeConfig(t *testing.T, p *pebble, challenge string, httpPort, tlsPort int) Certificates {
	return Certificates{
		Source:      SourceACME,
		Names:       []string{mailName},
		Email:       "postmaster@gatehouse.test",
		CA:          p.dir,
		CARoot:      p.caRoot,
		Storage:     t.TempDir(),
		Challenges:  []string{challenge},
		listenHost:  "127.0.0.1",
		httpPort:    httpPort,
		tlsALPNPort: tlsPort,
	}
}

// startACME runs m's first issuance, bounded in time.
func startACME(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := m.start(ctx); err != nil {
		t.Fatal(err)
	}
}

// countChallenges counts the requests for ACME HTTP-01 tokens that reach h.
func countChallenges(n *atomic.Int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			n.Add(1)
		}
		h.ServeHTTP(w, r)
	})
}

// HTTP-01: Pebble validates through the port-80 listener, whose handler is
// HTTPChallengeHandler around the redirect to https. The certificate is then
// served to a client that trusts Pebble's root, with SNI or without.
func TestACMEHTTP01(t *testing.T) {
	web := listen(t)
	p := startPebble(t, port(web), 1, 90*24*time.Hour)
	c := acmeConfig(t, p, ChallengeHTTP01, port(web), 0)
	m, err := newManager(c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var tokens atomic.Int64
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://"+r.Host+r.URL.Path, http.StatusMovedPermanently)
	})
	serveHTTP(t, web, countChallenges(&tokens, m.HTTPChallengeHandler(redirect)))
	startACME(t, m)

	if tokens.Load() == 0 {
		t.Fatal("Pebble never asked the port-80 listener for the token")
	}
	addr := serveTLS(t, m.ServerConfig())
	leaf := servedLeaf(t, addr, mailName, p.roots) // verified against Pebble's root
	if noSNI := servedLeaf(t, addr, "", nil); !slices.Equal(noSNI.DNSNames, []string{mailName}) {
		t.Errorf("no SNI: served %v", noSNI.DNSNames)
	}
	if got := testutil.ToFloat64(certExpiry.WithLabelValues(mailName)); got != float64(leaf.NotAfter.Unix()) {
		t.Errorf("expiry gauge %v, want %d", got, leaf.NotAfter.Unix())
	}
	if p.orders.Load() != 1 {
		t.Errorf("%d orders, want 1", p.orders.Load())
	}

	// Everything else on port 80 still gets the redirect.
	client := &http.Client{Timeout: ioTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get("http://" + web.Addr().String() + "/owa/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || !strings.HasPrefix(resp.Header.Get("Location"), "https://") {
		t.Errorf("GET /owa/ on port 80: %s, Location %q", resp.Status, resp.Header.Get("Location"))
	}
}

// TLS-ALPN-01: Pebble validates through a mail listener built from
// ServerConfig() (no ALPN of its own), which answers acme-tls/1 itself.
func TestACMETLSALPN01(t *testing.T) {
	smtps := listen(t)
	p := startPebble(t, 1, port(smtps), 90*24*time.Hour)
	c := acmeConfig(t, p, ChallengeTLSALPN01, 0, port(smtps))
	m, err := newManager(c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var challenges atomic.Int64
	cfg := m.ServerConfig()
	answer := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *stdtls.ClientHelloInfo) (*stdtls.Config, error) {
		if slices.Contains(hello.SupportedProtos, "acme-tls/1") {
			challenges.Add(1)
		}
		return answer(hello)
	}
	serveTLSOn(t, smtps, cfg)
	startACME(t, m)

	if challenges.Load() == 0 {
		t.Fatal("Pebble never validated through the listener")
	}
	addr := smtps.Addr().String()
	servedLeaf(t, addr, mailName, p.roots)
	// A mail client that offers its own ALPN name is served, not refused.
	cs, err := dialTLS(addr, &stdtls.Config{ServerName: mailName, RootCAs: p.roots, NextProtos: []string{"smtp"}})
	if err != nil || cs.NegotiatedProtocol != "" {
		t.Fatalf("client offering ALPN smtp: %v, negotiated %q", err, cs.NegotiatedProtocol)
	}
	// HTTPS listeners list acme-tls/1 after their own protocols.
	if got := m.ServerConfig("h2", "http/1.1").NextProtos; !slices.Equal(got, []string{"h2", "http/1.1", "acme-tls/1"}) {
		t.Errorf("HTTPS NextProtos %q", got)
	}
}

// Certificates that near their end are renewed by certmagic's maintenance
// and served without a restart; on_renew runs for the first certificate
// and for the renewal.
func TestACMERenewalWithoutRestart(t *testing.T) {
	web := listen(t)
	p := startPebble(t, port(web), 1, 12*time.Second)
	out := filepath.Join(t.TempDir(), "renewals")
	c := acmeConfig(t, p, ChallengeHTTP01, port(web), 0)
	c.renewCheck = 200 * time.Millisecond
	c.OnRenew = []string{"/bin/sh", "-c", `echo "$GATEHOUSE_CERT_NAMES" >> ` + out}
	m, err := newManager(c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	serveHTTP(t, web, m.HTTPChallengeHandler(http.NotFoundHandler()))
	startACME(t, m)
	addr := serveTLS(t, m.ServerConfig())
	first := servedLeaf(t, addr, mailName, p.roots)

	// Watch without verifying: a slow machine may let the first certificate
	// expire before its successor is served, which is not what this checks.
	peek := &stdtls.Config{ServerName: mailName, InsecureSkipVerify: true}
	renewed := eventually(30*time.Second, func() bool {
		cs, err := dialTLS(addr, peek)
		return err == nil && cs.PeerCertificates[0].SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if !renewed {
		t.Fatalf("still serving serial %x after its renewal window", first.SerialNumber)
	}
	servedLeaf(t, addr, mailName, p.roots) // the successor verifies
	if !eventually(5*time.Second, func() bool {
		return testutil.ToFloat64(certExpiry.WithLabelValues(mailName)) > float64(first.NotAfter.Unix())
	}) {
		t.Error("expiry gauge still shows the first certificate")
	}
	if p.orders.Load() < 2 {
		t.Errorf("%d orders, want a renewal order", p.orders.Load())
	}
	ran := eventually(10*time.Second, func() bool {
		data, _ := os.ReadFile(out)
		return strings.Count(string(data), mailName+"\n") >= 2
	})
	if !ran {
		data, _ := os.ReadFile(out)
		t.Fatalf("on_renew runs: %q, want one per certificate", data)
	}
}

// Two instances sharing one storage directory, started together, order the
// certificate once and serve the same one. One port-80 listener answers for
// both (certmagic's distributed solving through storage).
func TestACMESharedStorageOrdersOnce(t *testing.T) {
	web := listen(t)
	p := startPebble(t, port(web), 1, 90*24*time.Hour)
	c := acmeConfig(t, p, ChallengeHTTP01, port(web), 0)
	first, err := newManager(c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	serveHTTP(t, web, first.HTTPChallengeHandler(http.NotFoundHandler()))

	var second *Manager
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		errs <- first.start(ctx)
	}()
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		var err error
		second, err = NewManager(ctx, c, testLog(t))
		errs <- err
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	defer second.Close()

	a := servedLeaf(t, serveTLS(t, first.ServerConfig()), mailName, p.roots)
	b := servedLeaf(t, serveTLS(t, second.ServerConfig()), mailName, p.roots)
	if a.SerialNumber.Cmp(b.SerialNumber) != 0 {
		t.Errorf("the instances serve different certificates: %x and %x", a.SerialNumber, b.SerialNumber)
	}
	if n := p.orders.Load(); n != 1 {
		t.Fatalf("Pebble received %d orders, want 1", n)
	}
}

// Without an email (agree_terms: true), certmagic would ask for one on
// standard input; it must not. The issuance runs in a child process whose
// standard input is an open pipe nobody writes to, so a prompt would hang
// it, and with a fresh process certmagic has no email remembered from
// another test.
func TestACMEWithoutEmailNeverPrompts(t *testing.T) {
	if os.Getenv("GATEHOUSE_TLS_CHILD") == "1" {
		issueWithoutEmail(t)
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestACMEWithoutEmailNeverPrompts$", "-test.timeout=30s")
	cmd.Env = append(os.Environ(), "GATEHOUSE_TLS_CHILD=1")
	stdin, silent, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	defer silent.Close()
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "email address") {
		t.Fatalf("issuance without email: %v\n%s", err, out)
	}
}

func issueWithoutEmail(t *testing.T) {
	web := listen(t)
	p := startPebble(t, port(web), 1, 90*24*time.Hour)
	c := acmeConfig(t, p, ChallengeHTTP01, port(web), 0)
	c.Email, c.AgreeTerms = "", true
	m, err := newManager(c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	serveHTTP(t, web, m.HTTPChallengeHandler(http.NotFoundHandler()))
	startACME(t, m)
	servedLeaf(t, serveTLS(t, m.ServerConfig()), mailName, p.roots)
}
