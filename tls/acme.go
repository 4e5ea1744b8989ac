package tls

import (
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"fmt"
	"path"
	"strings"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// setupACME gives the Manager its ACME issuer. It never sets certmagic's
// package defaults: everything is in this Manager's own Config.
func (m *Manager) setupACME(zl *zap.Logger) error {
	c := m.cfg
	var roots *x509.CertPool
	if c.CARoot != "" {
		pool, err := loadPool(c.CARoot)
		if err != nil {
			return fmt.Errorf("tls: certificates: ca_root: %w", err)
		}
		roots = pool
	}
	ca := c.CA
	if ca == "" {
		ca = certmagic.LetsEncryptProductionCA
	}
	m.acme = certmagic.NewACMEIssuer(m.magic, certmagic.ACMEIssuer{
		CA:                      ca,
		Email:                   c.Email,
		Agreed:                  true, // Validate demanded an email or agree_terms
		TrustedRoots:            roots,
		DisableHTTPChallenge:    !c.challenge(ChallengeHTTP01),
		DisableTLSALPNChallenge: !c.challenge(ChallengeTLSALPN01),
		ListenHost:              c.listenHost,
		AltHTTPPort:             c.httpPort,
		AltTLSALPNPort:          c.tlsALPNPort,
		Logger:                  zl,
	})
	var iss certmagic.Issuer = m.acme
	if c.Email == "" {
		iss = quietIssuer{m.acme}
	}
	m.magic.Issuers = []certmagic.Issuer{iss}
	return nil
}

// quietIssuer is an ACMEIssuer whose pre-check never asks on standard input.
// certmagic's ManageSync is "interactive", and with no email configured its
// pre-check would prompt for one; an email given in the config never
// prompts, so only the email-less issuer is wrapped (a wrapped issuer loses
// certmagic's ARI "replaces" hint on renewal).
type quietIssuer struct {
	*certmagic.ACMEIssuer
}

// PreCheck runs the ACMEIssuer's pre-check, never interactively.
func (q quietIssuer) PreCheck(ctx context.Context, names []string, _ bool) error {
	return q.ACMEIssuer.PreCheck(ctx, names, false)
}

// manageACME loads every name's certificate from storage, or obtains it,
// before returning; certmagic's maintenance renews them from then on. The
// names it cannot obtain within firstTryTimeout are served a temporary
// certificate and retried in the background (pending.go); only the end of
// ctx makes it fail.
func (m *Manager) manageACME(ctx context.Context) error {
	first, cancel := context.WithTimeout(ctx, firstTryTimeout)
	defer cancel()
	failed, err := m.manageNames(first, m.cfg.names())
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	return m.startPending(failed, err)
}

// wantEvent lists the certmagic events onEvent acts on, so that certmagic
// does not build the others (one comes with every handshake).
func wantEvent(event string) bool {
	return event == "cert_obtained" || event == "cached_managed_cert"
}

// onEvent receives certmagic's events. certmagic calls it synchronously, so
// slow work goes to the background.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cert_obtained":
		certKey, _ := data["certificate_path"].(string)
		keyKey, _ := data["private_key_path"].(string)
		m.background(func(ctx context.Context) { m.obtained(ctx, certKey, keyKey) })
	case "cached_managed_cert":
		sans, _ := data["sans"].([]string)
		for _, name := range sans {
			m.recordCached(name)
		}
	}
	return nil
}

// obtained handles a certificate that certmagic has just stored: it logs it,
// records its expiry and runs the on_renew command.
func (m *Manager) obtained(ctx context.Context, certKey, keyKey string) {
	cert, err := m.loadStored(ctx, certKey, keyKey)
	if err != nil {
		m.log.Error("reading the certificate just obtained", "file", m.storage.Filename(certKey), "err", err)
		return
	}
	recordExpiry(cert.Leaf)
	m.log.Info("certificate obtained", "names", certNames(cert.Leaf), "not_after", cert.Leaf.NotAfter)
	m.runOnRenew(ctx, renewal{
		cert:     cert,
		certFile: m.storage.Filename(certKey),
		keyFile:  m.storage.Filename(keyKey),
		pfxKey:   strings.TrimSuffix(certKey, path.Ext(certKey)) + ".pfx",
	})
}

// loadStored reads a certificate and its key from storage.
func (m *Manager) loadStored(ctx context.Context, certKey, keyKey string) (stdtls.Certificate, error) {
	certPEM, err := m.storage.Load(ctx, certKey)
	if err != nil {
		return stdtls.Certificate{}, err
	}
	keyPEM, err := m.storage.Load(ctx, keyKey)
	if err != nil {
		return stdtls.Certificate{}, err
	}
	return stdtls.X509KeyPair(certPEM, keyPEM)
}

// recordCached sets name's expiry gauge from the newest certificate cached
// for it.
func (m *Manager) recordCached(name string) {
	var newest *x509.Certificate
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if c.Leaf != nil && (newest == nil || c.Leaf.NotAfter.After(newest.NotAfter)) {
			newest = c.Leaf
		}
	}
	if newest != nil {
		certExpiry.WithLabelValues(name).Set(float64(newest.NotAfter.Unix()))
	}
}
