package tls

// Starting with what works: an ACME certificate that cannot be obtained at
// start (the CA unreachable, DNS not yet pointing here, a rate limit) does
// not keep the process from starting. The names without a certificate get
// a temporary self-signed one, and obtaining is retried in the background
// until it succeeds; the real certificate then replaces the temporary one in
// the certmagic cache, which every ServerConfig reads at each handshake, so
// listeners serve it without a restart.
//
// Why a temporary certificate rather than refusing handshakes: most MTAs
// deliver over STARTTLS without verifying the certificate (RFC 7435
// opportunistic TLS), so mail keeps flowing encrypted, where a refused
// handshake would push senders to plaintext or to queueing. Clients that do
// verify (mail apps, browsers, MTA-STS and DANE senders) fail loudly either
// way; the temporary certificate's subject says what it is.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	stdtls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

const (
	// firstTryTimeout bounds the first attempt, made inside NewManager, so
	// that a CA that accepts connections and never answers does not hold
	// up the start either.
	firstTryTimeout = time.Minute
	// retryFirst is the wait before the first retry. It doubles after each
	// failure up to retryMax. certmagic's own first retry would come after
	// a minute; a CA back from a short outage is used sooner.
	retryFirst = 5 * time.Second
	retryMax   = 5 * time.Minute
	// attemptTimeout bounds one background attempt.
	attemptTimeout = 3 * time.Minute
	// tempValidity is the lifetime of a temporary certificate, under the
	// 398 days some clients accept at most.
	tempValidity = 397 * 24 * time.Hour
)

// TemporaryOrganization is the subject organization of the temporary
// self-signed certificates served while a certificate is pending, so that
// whoever inspects one sees what it is.
const TemporaryOrganization = "gatehouse temporary certificate (ACME pending)"

var certPending = promauto.NewGaugeVec(prometheus.GaugeOpts{
	Name: "gatehouse_tls_certificate_pending",
	Help: "1 while a certificate set is waiting to obtain the certificate for a name and serves " +
		"a temporary self-signed one (the number of sets waiting), else 0.",
}, []string{"name"})

// Status is the state of a certificate set's certificates, for
// /api/status and the status page.
type Status struct {
	// Pending is true while some names have no certificate from the
	// set's source and are served a temporary self-signed certificate.
	Pending bool `json:"pending"`
	// Names lists the pending names, sorted.
	Names []string `json:"names,omitempty"`
	// Since is when the set became pending.
	Since time.Time `json:"since,omitzero"`
	// Attempts counts the attempts to obtain so far, the first included.
	Attempts int `json:"attempts,omitempty"`
	// LastError is the error of the latest attempt.
	LastError string `json:"last_error,omitempty"`
	// LastTry is when the latest attempt ended.
	LastTry time.Time `json:"last_try,omitzero"`
	// NextTry is when the next attempt starts.
	NextTry time.Time `json:"next_try,omitzero"`
}

// pendingSet is what a Manager knows about its pending names.
type pendingSet struct {
	mu       sync.Mutex
	temp     map[string]string // pending name → cache hash of its temporary certificate
	since    time.Time
	attempts int
	lastErr  error
	lastTry  time.Time
	nextTry  time.Time
}

// Status reports whether the set is waiting for certificates, since when,
// the last error and the next attempt. Only ACME sets are ever pending: a
// files or self-signed set that cannot load fails NewManager.
func (m *Manager) Status() Status {
	p := &m.pending
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.temp) == 0 {
		return Status{}
	}
	s := Status{
		Pending:  true,
		Names:    slices.Sorted(maps.Keys(p.temp)),
		Since:    p.since,
		Attempts: p.attempts,
		LastTry:  p.lastTry,
		NextTry:  p.nextTry,
	}
	if p.lastErr != nil {
		s.LastError = p.lastErr.Error()
	}
	return s
}

// startPending serves a temporary certificate for each name in names,
// records the failure err of the first attempt and starts retrying in the
// background.
func (m *Manager) startPending(names []string, err error) error {
	p := &m.pending
	p.mu.Lock()
	defer p.mu.Unlock()
	p.temp = make(map[string]string, len(names))
	for _, name := range names {
		hash, err := m.cacheTemporary(name)
		if err != nil {
			m.retire(p.temp)
			return fmt.Errorf("tls: temporary certificate for %s: %w", name, err)
		}
		p.temp[name] = hash
		certPending.WithLabelValues(name).Inc()
	}
	now := time.Now()
	p.since, p.attempts, p.lastErr, p.lastTry, p.nextTry = now, 1, err, now, now.Add(retryFirst)
	m.log.Warn("certificates not obtained; serving temporary self-signed ones until they are",
		"names", names, "err", err, "next_try", p.nextTry)
	m.background(m.retryPending)
	return nil
}

// retryPending tries to obtain the pending certificates with growing waits
// until all are obtained or the Manager is closed.
func (m *Manager) retryPending(ctx context.Context) {
	defer m.stopPending()
	wait := retryFirst
	for {
		t := time.NewTimer(time.Until(m.pending.next()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = nextWait(wait)
		if m.tryPending(ctx, wait) {
			return
		}
	}
}

// nextWait returns the wait that follows wait: twice as long, at most
// retryMax.
func nextWait(wait time.Duration) time.Duration {
	return min(2*wait, retryMax)
}

// tryPending makes one attempt for the pending names and retires the
// temporary certificate of each name obtained. It reports whether none is
// pending any more; otherwise the next attempt is due after wait.
func (m *Manager) tryPending(ctx context.Context, wait time.Duration) bool {
	p := &m.pending
	p.mu.Lock()
	names := slices.Sorted(maps.Keys(p.temp))
	attempts := p.attempts
	p.mu.Unlock()

	// certmagic reads the number of earlier attempts from the context: on
	// a retry it orders from the CA's staging directory first (Let's
	// Encrypt's), which spares the production rate limits while DNS or
	// the firewall is still wrong.
	actx, cancel := context.WithTimeout(context.WithValue(ctx, certmagic.AttemptsCtxKey, &attempts), attemptTimeout)
	defer cancel()
	failed, err := m.manageNames(actx, names)
	if ctx.Err() != nil {
		return true // closed
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range names {
		if !slices.Contains(failed, name) {
			m.retire(map[string]string{name: p.temp[name]})
			delete(p.temp, name)
		}
	}
	now := time.Now()
	p.attempts++
	p.lastErr, p.lastTry, p.nextTry = err, now, now.Add(wait)
	if len(p.temp) == 0 {
		m.log.Info("certificates obtained; the temporary ones are retired", "names", names, "attempts", p.attempts)
		return true
	}
	m.log.Warn("certificates still not obtained; the temporary ones stay in service",
		"names", failed, "err", err, "attempts", p.attempts, "next_try", p.nextTry)
	return false
}

// next returns when the next attempt is due.
func (p *pendingSet) next() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nextTry
}

// stopPending runs when retrying ends: at Close, the names still pending
// leave the gauge; their temporary certificates stay in the cache for the
// listeners that still serve them.
func (m *Manager) stopPending() {
	p := &m.pending
	p.mu.Lock()
	defer p.mu.Unlock()
	for name := range p.temp {
		certPending.WithLabelValues(name).Dec()
	}
	p.temp = nil
}

// retire removes the given temporary certificates (name → cache hash) from
// the cache and the names from the pending gauge.
func (m *Manager) retire(temp map[string]string) {
	for name, hash := range temp {
		m.cache.Remove([]string{hash})
		certPending.WithLabelValues(name).Dec()
	}
}

// manageNames loads or obtains each name's certificate, one at a time so
// that one failing name does not keep the others from being served. It
// returns the names left without a certificate and their errors.
func (m *Manager) manageNames(ctx context.Context, names []string) (failed []string, err error) {
	var errs []error
	for _, name := range names {
		err := m.magic.ManageSync(ctx, []string{name})
		switch {
		case err == nil:
		case m.hasManaged(name):
			// A stored certificate is served; certmagic's maintenance
			// keeps trying to renew it.
			m.log.Warn("renewing the stored certificate failed; it stays in service", "name", name, "err", err)
		default:
			failed = append(failed, name)
			errs = append(errs, err)
			continue
		}
		m.recordCached(name)
	}
	if err := errors.Join(errs...); err != nil {
		return failed, fmt.Errorf("tls: acme (%s): %w", m.acme.CA, err)
	}
	return nil, nil
}

// hasManaged reports whether the cache holds a certificate for name other
// than a temporary one: in an ACME set, one that certmagic manages (loaded
// from storage or obtained) and keeps renewing.
func (m *Manager) hasManaged(name string) bool {
	temp := m.tempHashes()
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if !slices.Contains(temp, c.Hash()) {
			return true
		}
	}
	return false
}

// tempHashes lists the cache hashes of the temporary certificates.
func (m *Manager) tempHashes() []string {
	p := &m.pending
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Collect(maps.Values(p.temp))
}

// cacheTemporary puts a new temporary self-signed certificate for name into
// the cache and returns its hash.
func (m *Manager) cacheTemporary(name string) (string, error) {
	cert, err := temporaryCert(name, time.Now())
	if err != nil {
		return "", err
	}
	return m.magic.CacheUnmanagedTLSCertificate(m.ctx, cert, nil)
}

// temporaryCert makes a self-signed certificate for name, with a key that
// lives in memory only.
func temporaryCert(name string, now time.Time) (stdtls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return stdtls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{Organization: []string{TemporaryOrganization}, CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(tempValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return stdtls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return stdtls.Certificate{}, err
	}
	return stdtls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
