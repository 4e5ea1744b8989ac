package tls

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"
)

// fileSet serves certificates from files and reloads a pair when either of
// its files changes.
type fileSet struct {
	// put serves cert in place of the certificate cached under old.
	put func(ctx context.Context, cert stdtls.Certificate, old string) (hash string, err error)
	log *slog.Logger

	mu    sync.Mutex // serialises loads
	pairs []*filePair
}

// filePair is one configured {cert, key} and what was last made of it.
type filePair struct {
	CertFile
	stamp string   // sizes and mtimes at the last load attempt
	hash  string   // certmagic cache key of the served certificate, "" if none
	names []string // names of the served certificate
}

func newPairs(files []CertFile) []*filePair {
	pairs := make([]*filePair, len(files))
	for i, f := range files {
		pairs[i] = &filePair{CertFile: f}
	}
	return pairs
}

// startFiles loads every pair; any failure stops the start. It then settles
// the name served to clients without SNI.
func (m *Manager) startFiles(ctx context.Context) error {
	if err := m.files.load(ctx, true); err != nil {
		return err
	}
	first := m.files.pairs[0].names
	if m.cfg.DefaultName == "" {
		if len(first) > 0 {
			m.magic.DefaultServerName = first[0]
			m.magic.FallbackServerName = first[0]
		}
		return nil
	}
	for _, p := range m.files.pairs {
		if slices.Contains(p.names, m.cfg.DefaultName) {
			return nil
		}
	}
	return fmt.Errorf("tls: certificates: default_name: no certificate file holds %q", m.cfg.DefaultName)
}

// load (re)loads the pairs whose files changed since the last attempt, or
// all of them when force is set. A pair that fails keeps serving its
// previous certificate; the failures are logged and returned.
func (s *fileSet) load(ctx context.Context, force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, p := range s.pairs {
		st := fileStamp(p.CertFile)
		if !force && st == p.stamp {
			continue
		}
		p.stamp = st
		if err := s.loadPair(ctx, p); err != nil {
			if p.hash != "" {
				s.log.Error("certificate file not reloaded; the previous certificate stays in service",
					"cert", p.Cert, "key", p.Key, "err", err)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// loadPair reads p's files and, when they hold a usable certificate, serves
// it in place of the previous one.
func (s *fileSet) loadPair(ctx context.Context, p *filePair) error {
	cert, err := readPair(p.CertFile, time.Now())
	if err != nil {
		return err
	}
	old := p.hash
	if s.shared(p, old) {
		old = "" // another pair serves the same certificate
	}
	hash, err := s.put(ctx, cert, old)
	if err != nil {
		return fmt.Errorf("tls: files: %s: %w", p.Cert, err)
	}
	if hash != p.hash {
		s.log.Info("certificate loaded", "cert", p.Cert, "names", certNames(cert.Leaf),
			"not_after", cert.Leaf.NotAfter)
	}
	p.hash, p.names = hash, certNames(cert.Leaf)
	return nil
}

// shared reports whether a pair other than p serves the certificate hash.
func (s *fileSet) shared(p *filePair, hash string) bool {
	for _, q := range s.pairs {
		if q != p && hash != "" && q.hash == hash {
			return true
		}
	}
	return false
}

// readPair reads and checks one certificate and key: the key must match
// the leaf, and the leaf must be valid at now.
func readPair(f CertFile, now time.Time) (stdtls.Certificate, error) {
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return stdtls.Certificate{}, fmt.Errorf("tls: files: %w", err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return stdtls.Certificate{}, fmt.Errorf("tls: files: %w", err)
	}
	cert, err := stdtls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return stdtls.Certificate{}, fmt.Errorf("tls: files: key %s with certificate %s: %w", f.Key, f.Cert, err)
	}
	leaf := cert.Leaf
	if now.After(leaf.NotAfter) {
		return stdtls.Certificate{}, fmt.Errorf("tls: files: certificate %s expired on %s",
			f.Cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return stdtls.Certificate{}, fmt.Errorf("tls: files: certificate %s is not valid before %s",
			f.Cert, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return cert, nil
}

// fileStamp summarises the size and modification time of both files; a
// missing file gives a stamp of its own, so its return is noticed too.
func fileStamp(f CertFile) string {
	var st string
	for _, name := range []string{f.Cert, f.Key} {
		fi, err := os.Stat(name)
		if err != nil {
			st += "missing;"
			continue
		}
		st += fmt.Sprintf("%d:%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return st
}
