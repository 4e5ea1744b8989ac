package tls

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// FileProblem is one reason a certificate set or a back-end TLS setting
// cannot be used as configured, found by reading the files it names.
type FileProblem struct {
	// Key is the YAML key at fault, relative to the set or setting:
	// "files[0].cert", "files[1].key", "default_name", "ca_root" or
	// "ca_file".
	Key string
	// Err says what is wrong, naming the file.
	Err error
}

// CheckFiles reads the files c names, as NewManager would, and returns
// every problem that would make NewManager fail: a certificate or key
// file that is missing or unreadable, holds no PEM certificate or key, a
// key that does not match its certificate, a certificate expired or not
// yet valid at now, a default_name no certificate holds, an unreadable
// ca_root. It starts nothing and asks no network.
func (c Certificates) CheckFiles(now time.Time) []FileProblem {
	var probs []FileProblem
	switch c.source() {
	case SourceFiles:
		probs = c.checkPairs(now)
	case SourceACME:
		if c.CARoot != "" {
			if _, err := loadPool(c.CARoot); err != nil {
				probs = append(probs, FileProblem{"ca_root", err})
			}
		}
		probs = append(probs, c.checkStorage()...)
	case SourceSelfSigned:
		probs = append(probs, c.checkStorage()...)
	}
	return probs
}

// checkStorage reports a storage directory NewManager could not create:
// its nearest existing ancestor is not a directory, or not writable by
// this user (certmagic keeps its lock files and certificates there, and
// the self-signed CA its root). It creates nothing.
func (c Certificates) checkStorage() []FileProblem {
	dir := c.Storage
	if dir == "" {
		return nil // DefaultStorage is under the user's own directory
	}
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		switch {
		case err == nil && !fi.IsDir():
			return []FileProblem{{"storage", fmt.Errorf("storage %s: %s is not a directory", dir, d)}}
		case err == nil:
			if err := syscall.Access(d, 2); err != nil { // W_OK
				return []FileProblem{{"storage", fmt.Errorf("storage %s: cannot write in %s: %w", dir, d, err)}}
			}
			return nil
		case !errors.Is(err, fs.ErrNotExist) || filepath.Dir(d) == d:
			return []FileProblem{{"storage", fmt.Errorf("storage %s: %w", dir, err)}}
		}
	}
}

// checkPairs checks every certificate and key pair, then default_name.
func (c Certificates) checkPairs(now time.Time) []FileProblem {
	var probs []FileProblem
	var names []string
	loaded := true
	for i, f := range c.Files {
		cert, err := readPair(f, now)
		if err != nil {
			key := fmt.Sprintf("files[%d].%s", i, pairFault(f, now))
			probs = append(probs, FileProblem{key, err})
			loaded = false
			continue
		}
		names = append(names, certNames(cert.Leaf)...)
	}
	if loaded && c.DefaultName != "" && !slices.Contains(names, c.DefaultName) {
		probs = append(probs, FileProblem{"default_name",
			fmt.Errorf("no certificate file holds %q", c.DefaultName)})
	}
	return probs
}

// pairFault says which file of a pair readPair refused: the key when it
// is missing or the certificate reads fine on its own, else the
// certificate.
func pairFault(f CertFile, now time.Time) string {
	if _, err := os.Stat(f.Cert); err != nil {
		return "cert"
	}
	if _, err := os.Stat(f.Key); err != nil {
		return "key"
	}
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return "cert"
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return "cert"
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "cert"
	}
	if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return "cert"
	}
	return "key"
}

// CheckFiles reads the CA file b names, as ClientConfig would, and
// returns the problem that would make ClientConfig fail, or nil.
func (b Backend) CheckFiles() *FileProblem {
	if b.Mode == "" || b.Mode == ModeNone || b.CAFile == "" || b.Fingerprint != "" {
		return nil
	}
	if _, err := loadPool(b.CAFile); err != nil {
		return &FileProblem{"ca_file", err}
	}
	return nil
}

// Error formats the problem as "key: error".
func (p FileProblem) Error() string { return p.Key + ": " + p.Err.Error() }

// Unwrap returns the underlying error, so errors.Is(p, fs.ErrNotExist)
// tells a missing file.
func (p FileProblem) Unwrap() error { return p.Err }
