package tls

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// Certificate sources, the values of Certificates.Source.
const (
	SourceACME       = "acme"
	SourceFiles      = "files"
	SourceSelfSigned = "self-signed"
)

// ACME challenge types, the values of Certificates.Challenges.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// DefaultReloadInterval is how often certificate files are checked for
// changes when Certificates.ReloadInterval is zero.
const DefaultReloadInterval = 10 * time.Second

// Certificates configures one certificate set: where its certificates come
// from and how they are kept fresh. The zero value is a self-signed
// certificate for localhost kept in DefaultStorage().
type Certificates struct {
	// Source is "acme", "files" or "self-signed". Empty means "self-signed".
	Source string `yaml:"source"`

	// Names are the host names and IP addresses to hold certificates for
	// (acme and self-signed; files take their names from the certificates).
	// Empty means ["localhost"] for self-signed; acme requires at least one.
	Names []string `yaml:"names"`

	// DefaultName chooses the certificate for clients that send no SNI, as
	// many MTAs and older mail clients do, or a name no certificate holds.
	// Empty means the first name (for files: the first name of the first
	// certificate).
	DefaultName string `yaml:"default_name"`

	// Storage is the directory that holds ACME accounts, issued certificates,
	// the local CA and the locks that let several gatehouse instances share
	// it. Empty means DefaultStorage().
	Storage string `yaml:"storage"`

	// Email is the ACME account contact (acme). Empty is allowed only
	// together with AgreeTerms.
	Email string `yaml:"email"`

	// AgreeTerms states agreement with the ACME CA's subscriber agreement
	// (acme). Gatehouse never asks interactively, so setting Email or
	// AgreeTerms is taken as agreement; false is fine when Email is set.
	AgreeTerms bool `yaml:"agree_terms"`

	// CA is the ACME directory URL (acme). Empty means Let's Encrypt's
	// production directory.
	CA string `yaml:"ca"`

	// CARoot is a PEM file of root certificates trusted for the ACME
	// server's own HTTPS, for a private CA such as Pebble or step-ca (acme).
	// Empty means the system roots.
	CARoot string `yaml:"ca_root"`

	// Challenges lists the ACME challenges gatehouse answers: "http-01"
	// (on the port-80 listener, through HTTPChallengeHandler) and
	// "tls-alpn-01" (on every TLS listener). Empty means both.
	Challenges []string `yaml:"challenges"`

	// Files are the certificate and key files to serve (files); each
	// certificate is chosen by SNI for the names it holds.
	Files []CertFile `yaml:"files"`

	// ReloadInterval is how often Files are checked for changes (files).
	// Zero means DefaultReloadInterval.
	ReloadInterval time.Duration `yaml:"reload_interval"`

	// OnRenew is a command (argv, no shell) run after a certificate is
	// obtained or renewed (acme) or generated (self-signed), with
	// GATEHOUSE_CERT_FILE, GATEHOUSE_KEY_FILE, GATEHOUSE_PFX_FILE,
	// GATEHOUSE_PFX_PASSWORD and GATEHOUSE_CERT_NAMES in its environment.
	// Its failure is logged, never fatal. Empty means no command.
	OnRenew []string `yaml:"on_renew"`

	// Settings that only tests change: where certmagic's own challenge
	// listeners bind when the ports are free, and how often its maintenance
	// looks for certificates to renew.
	listenHost  string
	httpPort    int
	tlsALPNPort int
	renewCheck  time.Duration
}

// CertFile names one certificate chain and its private key, both PEM.
type CertFile struct {
	// Cert is the certificate chain file, leaf first. Required.
	Cert string `yaml:"cert"`
	// Key is the private key file. Required.
	Key string `yaml:"key"`
}

// DefaultStorage is the storage directory used when Certificates.Storage is
// empty: $XDG_DATA_HOME/gatehouse, or ~/.local/share/gatehouse.
func DefaultStorage() string {
	if dir := os.Getenv("XDG_DATA_HOME"); dir != "" {
		return filepath.Join(dir, "gatehouse")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".local", "share", "gatehouse")
	}
	return filepath.Join(home, ".local", "share", "gatehouse")
}

// Validate reports the first problem in c, naming the YAML key at fault.
func (c Certificates) Validate() error {
	switch c.source() {
	case SourceACME:
		return c.validateACME()
	case SourceFiles:
		return c.validateFiles()
	case SourceSelfSigned:
		return c.validateSelfSigned()
	}
	return fmt.Errorf("source %q: want acme, files or self-signed", c.Source)
}

func (c Certificates) source() string {
	if c.Source == "" {
		return SourceSelfSigned
	}
	return c.Source
}

func (c Certificates) validateACME() error {
	if len(c.Names) == 0 {
		return errors.New("names: acme needs at least one name")
	}
	for _, n := range c.Names {
		if strings.HasPrefix(n, "*.") {
			return fmt.Errorf("names: %q: wildcards need the DNS-01 challenge, which gatehouse does not answer", n)
		}
	}
	if err := c.validateNames(); err != nil {
		return err
	}
	if c.Email == "" && !c.AgreeTerms {
		return errors.New("email: acme needs an email, or agree_terms: true to register without one")
	}
	if c.CA != "" {
		if u, err := url.Parse(c.CA); err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("ca: %q is not an https:// ACME directory URL", c.CA)
		}
	}
	for _, ch := range c.Challenges {
		if ch != ChallengeHTTP01 && ch != ChallengeTLSALPN01 {
			return fmt.Errorf("challenges: %q: want http-01 or tls-alpn-01", ch)
		}
	}
	return refuse(SourceACME, setKey{c.Files != nil, "files"}, setKey{c.ReloadInterval != 0, "reload_interval"})
}

func (c Certificates) validateFiles() error {
	if len(c.Files) == 0 {
		return errors.New("files: source files needs at least one {cert, key}")
	}
	for i, f := range c.Files {
		if f.Cert == "" || f.Key == "" {
			return fmt.Errorf("files[%d]: both cert and key are required", i)
		}
	}
	if c.ReloadInterval < 0 {
		return fmt.Errorf("reload_interval: %v is negative", c.ReloadInterval)
	}
	if err := refuse(SourceFiles, setKey{c.Names != nil, "names"}, setKey{c.OnRenew != nil, "on_renew"}); err != nil {
		return err
	}
	return c.refuseACME(SourceFiles)
}

func (c Certificates) validateSelfSigned() error {
	if err := c.validateNames(); err != nil {
		return err
	}
	err := refuse(SourceSelfSigned, setKey{c.Files != nil, "files"}, setKey{c.ReloadInterval != 0, "reload_interval"})
	if err != nil {
		return err
	}
	return c.refuseACME(SourceSelfSigned)
}

// validateNames checks Names and that DefaultName is one of them.
func (c Certificates) validateNames() error {
	for _, n := range c.Names {
		if !certmagic.SubjectQualifiesForCert(n) {
			return fmt.Errorf("names: %q is not a host name or IP address", n)
		}
	}
	if c.DefaultName != "" && !slices.Contains(c.names(), c.DefaultName) {
		return fmt.Errorf("default_name: %q is not one of names", c.DefaultName)
	}
	return nil
}

// names returns Names with the self-signed default applied.
func (c Certificates) names() []string {
	if len(c.Names) == 0 && c.source() == SourceSelfSigned {
		return []string{"localhost"}
	}
	return c.Names
}

// defaultName returns the name served to clients without SNI.
func (c Certificates) defaultName() string {
	if c.DefaultName != "" {
		return c.DefaultName
	}
	if n := c.names(); len(n) > 0 {
		return n[0]
	}
	return ""
}

func (c Certificates) storage() string {
	if c.Storage == "" {
		return DefaultStorage()
	}
	return c.Storage
}

func (c Certificates) reloadInterval() time.Duration {
	if c.ReloadInterval == 0 {
		return DefaultReloadInterval
	}
	return c.ReloadInterval
}

func (c Certificates) challenge(name string) bool {
	return len(c.Challenges) == 0 || slices.Contains(c.Challenges, name)
}

// refuseACME refuses the ACME-only keys for another source.
func (c Certificates) refuseACME(source string) error {
	return refuse(source,
		setKey{c.Email != "", "email"},
		setKey{c.AgreeTerms, "agree_terms"},
		setKey{c.CA != "", "ca"},
		setKey{c.CARoot != "", "ca_root"},
		setKey{c.Challenges != nil, "challenges"})
}

// setKey says whether the YAML key named key was set.
type setKey struct {
	set bool
	key string
}

// refuse names the first key that is set although source does not use it.
func refuse(source string, keys ...setKey) error {
	for _, k := range keys {
		if k.set {
			return fmt.Errorf("%s: not used with source %s", k.key, source)
		}
	}
	return nil
}
