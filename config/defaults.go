package config

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gatehouse-proxy/gatehouse/tls"
)

// Defaults, in one place. Each is documented on the Config field it fills.
const (
	DefaultStateDir      = "/var/lib/gatehouse"
	DefaultAdminListen   = "127.0.0.1:9900"
	DefaultShutdownGrace = 30 * time.Second
	DefaultConnect       = 3 * time.Second
	DefaultIdle          = time.Hour
	DefaultInterval      = 5 * time.Second
	DefaultProbeTimeout  = 3 * time.Second
	DefaultRise          = 2
	DefaultFall          = 3
	// DefaultSMTPMaxPerIP is max_per_ip of smtp listeners, as Postfix's
	// smtpd_client_connection_count_limit.
	DefaultSMTPMaxPerIP = 50
	// DefaultMailMaxPerIP is max_per_ip of pop3 and imap listeners: an
	// office of 20 behind one NAT address, each with a few IMAP
	// connections (mail clients open up to 5 per account), fits; one
	// address cannot hold every back-end's login slots.
	DefaultMailMaxPerIP = 100
)

// applyDefaults fills every zero field that has a default.
func applyDefaults(c *Config) {
	setDefault(&c.StateDir, DefaultStateDir)
	setDefault(&c.ShutdownGrace, DefaultShutdownGrace)
	setDefault(&c.ReloadGrace, 30*time.Second)
	setDefault(&c.UpgradeGrace, time.Hour)
	setDefault(&c.Admin.Listen, DefaultAdminListen)
	setDefault(&c.Admin.DisableGrace, 10*time.Second)
	setDefault(&c.Log.Level, "info")
	setDefault(&c.Log.Format, "text")
	for i := range c.Listeners {
		listenerDefaults(&c.Listeners[i])
	}
	if len(c.Certificates) == 0 && needsCertificates(c) {
		c.Certificates = map[string]tls.Certificates{DefaultCertificates: {Source: tls.SourceSelfSigned}}
	}
	for name, set := range c.Certificates {
		setDefault(&set.Storage, filepath.Join(c.StateDir, "certificates"))
		c.Certificates[name] = set
	}
}

// DefaultCertificates is the name of the certificate set that serves
// listeners naming none (when there is more than one set).
const DefaultCertificates = "default"

// needsCertificates reports whether any listener terminates TLS.
func needsCertificates(c *Config) bool {
	for _, l := range c.Listeners {
		if l.TLS.TLS() {
			return true
		}
	}
	return len(c.HTTP.Listen) > 0 || !c.Admin.OnLoopback()
}

// OnLoopback reports whether the admin listener binds only loopback
// (or is off): then it needs neither token nor TLS.
func (a Admin) OnLoopback() bool {
	listen := a.Listen
	if listen == "off" {
		return true
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return true // reported by validation
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CertificateSet returns the name of the set a listener's reference means:
// the named one, else "default", else the only one.
func (c *Config) CertificateSet(ref string) string {
	if ref != "" {
		return ref
	}
	if _, ok := c.Certificates[DefaultCertificates]; ok || len(c.Certificates) != 1 {
		return DefaultCertificates
	}
	for name := range c.Certificates {
		return name
	}
	return DefaultCertificates
}

// defaultProbe is the health probe of each protocol's listeners: the one
// that talks to the back-end as the protocol's clients do.
var defaultProbe = map[string]string{"tcp": "tcp", "pop3": "pop3", "imap": "imap", "smtp": "smtp", "https": "https"}

// defaultAffinity is each protocol's default routing key: SMTP sessions
// from one client address stay on one back-end (RFC 5321 retries of one
// sender land together); the login protocols route by user anyway.
var defaultAffinity = map[string]string{"tcp": "none", "smtp": "source-ip", "pop3": "none", "imap": "none", "https": "none"}

func listenerDefaults(l *Listener) {
	setDefault(&l.Protocol, "tcp")
	setDefault(&l.Balance, "round-robin")
	setDefault(&l.Affinity, defaultAffinity[l.Protocol])
	setDefault(&l.Timeouts.Connect, DefaultConnect)
	setDefault(&l.Timeouts.Idle, DefaultIdle)
	switch l.Protocol {
	case "pop3", "imap":
		l.Route.SetDefaults()
		l.POP3.SetDefaults()
		l.IMAP.SetDefaults()
		setDefault(&l.Limits.MaxPerIP, DefaultMailMaxPerIP)
	case "smtp":
		l.SMTP.SetDefaults()
		// Postfix's smtpd_client_connection_count_limit: one address
		// cannot hold more than its share of the back-ends' smtpd slots.
		setDefault(&l.Limits.MaxPerIP, DefaultSMTPMaxPerIP)
	case "https":
		l.HTTPS.SetDefaults()
	}
	if l.Port == 0 && len(l.Listen) > 0 {
		if _, p, err := net.SplitHostPort(l.Listen[0]); err == nil {
			l.Port, _ = strconv.Atoi(p)
		}
	}
	if l.Health == nil {
		l.Health = &Health{}
	}
	h := l.Health
	setDefault(&h.Probe, defaultProbe[l.Protocol])
	setDefault(&h.Interval, DefaultInterval)
	setDefault(&h.Timeout, DefaultProbeTimeout)
	setDefault(&h.Rise, DefaultRise)
	setDefault(&h.Fall, DefaultFall)
}

func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// CertificateStorage returns the storage directory of a certificate set
// ("" means the default set).
func CertificateStorage(c *Config, set string) (string, error) {
	name := c.CertificateSet(set)
	certs, ok := c.Certificates[name]
	if !ok {
		return "", fmt.Errorf("no certificate set %q in the configuration", name)
	}
	return certs.Storage, nil
}
