package tls

import (
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// relisten binds addr again, for a CA that comes up where it was down.
func relisten(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("binding %s again (another process took the released port?): %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// downConfig is a certificate set ordered from an ACME directory on caAddr,
// which refuses connections for now; https is the identity the CA will
// have, and HTTP-01 is answered on httpPort.
func downConfig(t *testing.T, caAddr string, https pebbleFront, httpPort int) Certificates {
	return Certificates{
		Source:     SourceACME,
		Names:      []string{mailName},
		Email:      "postmaster@gatehouse.test",
		CA:         "https://" + caAddr + "/dir",
		CARoot:     https.caRoot,
		Storage:    t.TempDir(),
		Challenges: []string{ChallengeHTTP01},
		listenHost: "127.0.0.1",
		httpPort:   httpPort,
	}
}

// pendingGauge reads gatehouse_tls_certificate_pending for mailName.
func pendingGauge() float64 {
	return testutil.ToFloat64(certPending.WithLabelValues(mailName))
}

// An unreachable ACME CA does not fail NewManager: a temporary self-signed
// certificate is served, and Status and the gauge say the set is pending.
// Once the CA comes up on the same address, the certificate is obtained in
// the background and served by the TLS config handed out while pending,
// without a restart.
func TestACMEUnreachableCAStartsPendingThenObtains(t *testing.T) {
	web := listen(t)
	caAddr := wiretest.FreeAddr(t)
	https := newPebbleFront(t)
	var logs syncBuffer
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	m, err := NewManager(ctx, downConfig(t, caAddr, https, port(web)), slogTo(&logs))
	if err != nil {
		t.Fatalf("NewManager with the CA down: %v", err)
	}
	defer m.Close()
	serveHTTP(t, web, m.HTTPChallengeHandler(http.NotFoundHandler()))
	addr := serveTLS(t, m.ServerConfig()) // handed out while pending, kept to the end

	checkTemporary(t, addr)
	checkPendingStatus(t, m, caAddr)
	if !strings.Contains(logs.String(), "level=WARN msg=\"certificates not obtained; serving temporary self-signed ones") ||
		!strings.Contains(logs.String(), "connection refused") {
		t.Errorf("no WARN line with the error:\n%s", logs.String())
	}

	p := startPebbleOn(t, relisten(t, caAddr), https, port(web), 1, 90*24*time.Hour)
	verified := &stdtls.Config{ServerName: mailName, RootCAs: p.roots}
	if !eventually(2*time.Minute, func() bool { _, err := dialTLS(addr, verified); return err == nil }) {
		t.Fatalf("the Pebble certificate is not served; status %+v\n%s", m.Status(), logs.String())
	}
	if noSNI := servedLeaf(t, addr, "", nil); !slices.Equal(noSNI.DNSNames, []string{mailName}) || noSNI.Issuer.CommonName == mailName {
		t.Errorf("no SNI: served %v issued by %q", noSNI.DNSNames, noSNI.Issuer.CommonName)
	}
	if st := m.Status(); st.Pending || len(st.Names) != 0 {
		t.Errorf("status after obtaining: %+v", st)
	}
	if g := pendingGauge(); g != 0 {
		t.Errorf("pending gauge %v after obtaining, want 0", g)
	}
	if p.orders.Load() != 1 {
		t.Errorf("%d orders, want 1", p.orders.Load())
	}
	if !strings.Contains(logs.String(), "certificates obtained; the temporary ones are retired") {
		t.Errorf("no log line for the swap:\n%s", logs.String())
	}
}

// checkTemporary checks that addr serves a self-signed certificate for
// mailName that says it is temporary, which a verifying client refuses.
func checkTemporary(t *testing.T, addr string) {
	t.Helper()
	for _, sni := range []string{mailName, ""} {
		cs, err := dialTLS(addr, &stdtls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("handshake while pending (SNI %q): %v", sni, err)
		}
		leaf := cs.PeerCertificates[0]
		if !slices.Equal(leaf.DNSNames, []string{mailName}) || !slices.Equal(leaf.Subject.Organization, []string{TemporaryOrganization}) {
			t.Errorf("SNI %q: served %v, organization %v", sni, leaf.DNSNames, leaf.Subject.Organization)
		}
		if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
			t.Errorf("SNI %q: the temporary certificate is not self-signed: %v", sni, err)
		}
	}
	_, err := dialTLS(addr, &stdtls.Config{ServerName: mailName, RootCAs: x509.NewCertPool()})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("a verifying client got %v, want an unknown authority", err)
	}
}

// checkPendingStatus checks Status and the gauge of a set whose CA at
// caAddr refused the first attempt.
func checkPendingStatus(t *testing.T, m *Manager, caAddr string) {
	t.Helper()
	st := m.Status()
	if !st.Pending || !slices.Equal(st.Names, []string{mailName}) || st.Attempts < 1 {
		t.Fatalf("status %+v, want pending for %s", st, mailName)
	}
	if !strings.Contains(st.LastError, caAddr) || !strings.Contains(st.LastError, "connection refused") {
		t.Errorf("last error %q does not say the CA refused", st.LastError)
	}
	if st.Since.IsZero() || st.LastTry.Before(st.Since) || !st.NextTry.After(st.LastTry) {
		t.Errorf("status times: since %v, last try %v, next try %v", st.Since, st.LastTry, st.NextTry)
	}
	if g := pendingGauge(); g != 1 {
		t.Errorf("pending gauge %v, want 1", g)
	}
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"pending":true`, `"names":["` + mailName + `"]`, `"since":`, `"attempts":`, `"last_error":`, `"last_try":`, `"next_try":`} {
		if !strings.Contains(string(js), key) {
			t.Errorf("status JSON %s lacks %s", js, key)
		}
	}
	if js, _ := json.Marshal(Status{}); string(js) != `{"pending":false}` {
		t.Errorf("status JSON of a set not pending: %s", js)
	}
}

// Waits between attempts double from retryFirst up to retryMax: a few
// seconds at first, a few minutes at most.
func TestRetryWaitsDoubleUpToMax(t *testing.T) {
	var waits []time.Duration
	for w := retryFirst; len(waits) < 10; w = nextWait(w) {
		waits = append(waits, w)
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute}
	if !slices.Equal(waits, want) {
		t.Errorf("waits %v, want %v", waits, want)
	}
}

// Retries follow the backoff: the second attempt comes about retryFirst
// after the first, and Close ends retrying and takes the names off the
// gauge.
func TestACMEPendingRetriesUntilClose(t *testing.T) {
	var logs syncBuffer
	c := downConfig(t, wiretest.FreeAddr(t), newPebbleFront(t), port(listen(t)))
	m, err := NewManager(t.Context(), c, slogTo(&logs))
	if err != nil {
		t.Fatal(err)
	}
	first := m.Status()
	if !eventually(retryFirst+30*time.Second, func() bool { return m.Status().Attempts >= 2 }) {
		m.Close()
		t.Fatalf("no retry: status %+v", m.Status())
	}
	second := m.Status()
	if got := second.LastTry.Sub(first.LastTry); got < retryFirst {
		t.Errorf("retried after %v, want at least %v", got, retryFirst)
	}
	if got := second.NextTry.Sub(second.LastTry); got < 2*retryFirst || got > retryMax {
		t.Errorf("next wait %v, want doubled (%v) and at most %v", got, 2*retryFirst, retryMax)
	}
	if !strings.Contains(logs.String(), "certificates still not obtained") {
		t.Errorf("no log line for the failed retry:\n%s", logs.String())
	}
	m.Close()
	if g := pendingGauge(); g != 0 {
		t.Errorf("pending gauge %v after Close, want 0", g)
	}
}

// A CA that works is used before NewManager returns, as before: the
// certificate is served at once and the set is never pending. certmagic
// answers HTTP-01 on its own listener, as it does when nothing else holds
// the port.
func TestACMEReachableCAObtainsBeforeNewManagerReturns(t *testing.T) {
	free := listen(t)
	httpPort := port(free)
	free.Close()
	p := startPebble(t, httpPort, 1, 90*24*time.Hour)
	c := acmeConfig(t, p, ChallengeHTTP01, httpPort, 0)
	m := newTestManager(t, c)

	if st := m.Status(); st.Pending {
		t.Errorf("status %+v, want not pending", st)
	}
	if g := pendingGauge(); g != 0 {
		t.Errorf("pending gauge %v, want 0", g)
	}
	servedLeaf(t, serveTLS(t, m.ServerConfig()), mailName, p.roots) // verified, no wait
	if p.orders.Load() != 1 {
		t.Errorf("%d orders, want 1", p.orders.Load())
	}
}

// A stored certificate due for renewal stays in service when the CA is
// down at start: the set is not pending, the stored certificate is served
// rather than a temporary one, and certmagic's maintenance keeps renewing.
func TestACMEStoredCertificateServedWhileCADown(t *testing.T) {
	web := listen(t)
	p := startPebble(t, port(web), 1, 6*time.Second)
	c := acmeConfig(t, p, ChallengeHTTP01, port(web), 0)
	first, err := newManager(c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, web, first.HTTPChallengeHandler(http.NotFoundHandler()))
	startACME(t, first)
	stored := servedLeaf(t, serveTLS(t, first.ServerConfig()), mailName, p.roots)
	first.Close()
	p.srv.Close() // the CA goes down; its address now refuses connections

	lifetime := stored.NotAfter.Sub(stored.NotBefore)
	if !eventually(lifetime, func() bool { return time.Until(stored.NotAfter) < lifetime/3 }) {
		t.Fatal("the certificate never entered its renewal window")
	}
	var logs syncBuffer
	m, err := NewManager(t.Context(), c, slogTo(&logs))
	if err != nil {
		t.Fatalf("NewManager with a stored certificate and the CA down: %v", err)
	}
	defer m.Close()
	if st := m.Status(); st.Pending {
		t.Errorf("status %+v, want not pending", st)
	}
	cs, err := dialTLS(serveTLS(t, m.ServerConfig()), &stdtls.Config{ServerName: mailName, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.PeerCertificates[0]; got.SerialNumber.Cmp(stored.SerialNumber) != 0 {
		t.Errorf("served serial %x (organization %v), want the stored %x", got.SerialNumber, got.Subject.Organization, stored.SerialNumber)
	}
	if !strings.Contains(logs.String(), "renewing the stored certificate failed; it stays in service") {
		t.Errorf("no WARN line for the failed renewal:\n%s", logs.String())
	}
}
