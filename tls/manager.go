package tls

import (
	"context"
	stdtls "crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// Manager serves the certificates of one Certificates set and keeps them
// fresh: ACME issuance and renewal, reloading changed files, or the local
// CA. It is safe for concurrent use.
type Manager struct {
	cfg     Certificates
	log     *slog.Logger
	storage *certmagic.FileStorage
	cache   *certmagic.Cache
	magic   *certmagic.Config

	acme  *certmagic.ACMEIssuer // source acme only
	files *fileSet              // source files only
	local *localCA              // source self-signed only

	pending pendingSet // ACME names served a temporary certificate

	ctx    context.Context // ends at Close; background work runs under it
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex // guards closed and wg.Add against Close
	closed bool
}

// NewManager builds the Manager for c and makes its certificates ready:
// ACME certificates are loaded from storage or obtained before it returns,
// files are loaded and checked, the local CA is created or loaded. An ACME
// certificate that cannot be obtained within a minute (CA unreachable, DNS
// not pointing here) does not fail NewManager: its names are served a
// temporary self-signed certificate, logged at WARN with the error, and
// obtaining is retried in the background (after 5 s, doubling up to 5 min)
// until the real certificate replaces it without a restart; Status reports
// the wait. Other failures, and the end of ctx, are returned, naming the
// file or name at fault. A nil log means slog.Default().
func NewManager(ctx context.Context, c Certificates, log *slog.Logger) (*Manager, error) {
	m, err := newManager(c, log)
	if err != nil {
		return nil, err
	}
	if err := m.start(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// newManager builds a Manager without touching the network or the
// certificate files yet.
func newManager(c Certificates, log *slog.Logger) (*Manager, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("tls: certificates: %w", err)
	}
	log = logger(log).With("certificates", c.source())
	zl := zapToSlog(log.With("lib", "certmagic"))
	m := &Manager{cfg: c, log: log, storage: &certmagic.FileStorage{Path: c.storage()}}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		RenewCheckInterval: c.renewCheck,
		Logger:             zl,
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		Storage:            m.storage,
		DefaultServerName:  c.defaultName(),
		FallbackServerName: c.defaultName(),
		OnEvent:            m.onEvent,
		ShouldEmitFunc:     wantEvent,
		Logger:             zl,
	})
	switch c.source() {
	case SourceACME:
		if err := m.setupACME(zl); err != nil {
			m.Close()
			return nil, err
		}
	case SourceFiles:
		m.files = &fileSet{put: m.cacheReplacing, log: log, pairs: newPairs(c.Files)}
	case SourceSelfSigned:
		m.local = &localCA{storage: m.storage, names: c.names()}
	}
	return m, nil
}

// start makes the certificates ready and starts the background work.
func (m *Manager) start(ctx context.Context) error {
	switch {
	case m.acme != nil:
		return m.manageACME(ctx)
	case m.files != nil:
		if err := m.startFiles(ctx); err != nil {
			return err
		}
		m.every(m.cfg.reloadInterval(), func(ctx context.Context) {
			_ = m.files.load(ctx, false) // failures are logged by load
		})
	case m.local != nil:
		if err := m.refreshLocal(ctx); err != nil {
			return err
		}
		m.every(localCheckInterval, func(ctx context.Context) {
			if err := m.refreshLocal(ctx); err != nil {
				m.log.Error("local CA check failed; the current certificate stays in service", "err", err)
			}
		})
	}
	return nil
}

// ServerConfig returns a listener TLS config that serves this Manager's
// certificates under gatehouse's policy (TLS 1.2 minimum, ECDHE with AEAD
// ciphers, X25519 and P-256, session tickets with keys that crypto/tls
// rotates). alpn lists the listener's application protocols: "h2",
// "http/1.1" for HTTPS, none for mail. With ACME the config also answers
// the TLS-ALPN-01 challenge. Each call returns a new Config; keep one per
// listener so that its session tickets stay valid.
func (m *Manager) ServerConfig(alpn ...string) *stdtls.Config {
	acmeALPN := m.acme != nil && !m.acme.DisableTLSALPNChallenge
	return serverConfig(m.magic.GetCertificate, acmeALPN, alpn)
}

// HTTPChallengeHandler wraps next, the port-80 listener's handler (usually
// the redirect to https), so that it answers ACME HTTP-01 challenges for
// this Manager and for every instance sharing its storage. Without ACME
// HTTP-01 it returns next.
func (m *Manager) HTTPChallengeHandler(next http.Handler) http.Handler {
	if m.acme == nil || m.acme.DisableHTTPChallenge {
		return next
	}
	return m.acme.HTTPChallengeHandler(next)
}

// Reload re-reads the certificate files now (files) or re-checks the local
// CA's certificate (self-signed). A file that fails to load leaves its
// previous certificate in service; the failures are returned. ACME
// certificates are kept fresh by certmagic's maintenance, so Reload does
// nothing for acme.
func (m *Manager) Reload() error {
	switch {
	case m.files != nil:
		return m.files.load(m.ctx, true)
	case m.local != nil:
		return m.refreshLocal(m.ctx)
	}
	return nil
}

// Close stops renewal, retries of pending certificates, reloading and any
// running on_renew command. Listeners built from ServerConfig keep serving
// the certificates already loaded.
func (m *Manager) Close() {
	m.mu.Lock()
	closed := m.closed
	m.closed = true
	m.mu.Unlock()
	if closed {
		return
	}
	m.cancel()
	m.wg.Wait()
	m.cache.Stop()
}

// every runs f every d until Close.
func (m *Manager) every(d time.Duration, f func(ctx context.Context)) {
	if !m.track() {
		return
	}
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-t.C:
				f(m.ctx)
			}
		}
	}()
}

// background runs f in a goroutine that Close waits for.
func (m *Manager) background(f func(ctx context.Context)) {
	if !m.track() {
		return
	}
	go func() {
		defer m.wg.Done()
		f(m.ctx)
	}()
}

// track counts one more goroutine for Close to wait for, unless Close has
// begun.
func (m *Manager) track() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	return true
}

// cacheReplacing puts cert into the certmagic cache and removes the
// certificate cached under old (a hash), unless it is the same one.
// Handshakes in flight keep the certificate they already picked.
func (m *Manager) cacheReplacing(ctx context.Context, cert stdtls.Certificate, old string) (string, error) {
	hash, err := m.magic.CacheUnmanagedTLSCertificate(ctx, cert, nil)
	if err != nil {
		return "", err
	}
	if old != "" && old != hash {
		m.cache.Remove([]string{old})
	}
	recordExpiry(cert.Leaf)
	return hash, nil
}
