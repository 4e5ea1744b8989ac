package config

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/gatehouse-proxy/gatehouse/health"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// Protocols are the listener protocols this build serves.
var Protocols = []string{"tcp", "smtp", "pop3", "imap", "https"}

// validate checks what decoding cannot: required fields, references
// between sections, ports used twice, and values from closed sets.
func validate(c *Config, d *decoder) {
	ports := map[string][]bound{} // port → where it is bound already
	oneOf(d, "log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf(d, "log.format", c.Log.Format, "text", "json")
	if c.Admin.Listen != "off" {
		// The admin listener binds before the listeners: a listener on its
		// port would make run fail with "address already in use".
		if port, ok := checkHostPort(d, "admin.listen", c.Admin.Listen); ok {
			checkPortFree(d, ports, "admin.listen", c.Admin.Listen, port)
		}
	}
	if !c.Admin.OnLoopback() {
		if len(c.Admin.Token) < 16 {
			d.problemAt("admin", "admin.listen %s is not loopback: set admin.token to a secret of at least 16 characters", c.Admin.Listen)
		}
		checkCertificateRef(d, c, "admin.certificates", c.Admin.Certificates)
	}
	for i, name := range c.Admin.Names {
		if name == "" || strings.ContainsAny(name, ":/[] ") {
			d.problemAt(fmt.Sprintf("admin.names[%d]", i), "admin.names: %q is not a host name (no scheme, port or path)", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Backends)) {
		validateBackend(d, name, c.Backends[name])
	}
	for _, name := range slices.Sorted(maps.Keys(c.Certificates)) {
		if err := c.Certificates[name].Validate(); err != nil {
			d.problemIn("certificates."+name, err, "certificates %q: %v", name, err)
		}
	}
	for j, addr := range c.HTTP.Listen {
		if port, ok := checkHostPort(d, fmt.Sprintf("http.listen[%d]", j), addr); ok {
			checkPortFree(d, ports, fmt.Sprintf("http.listen[%d]", j), addr, port)
		}
	}
	if len(c.HTTP.Listen) > 0 {
		checkCertificateRef(d, c, "http.certificates", c.HTTP.Certificates)
	}
	if c.HTTP.HTTPSPort < 0 || c.HTTP.HTTPSPort > 65535 {
		d.problemAt("http.https_port", "port %d out of range 1-65535", c.HTTP.HTTPSPort)
	}
	if len(c.Listeners) == 0 {
		d.problemAt("listeners", "no listeners: gatehouse would do nothing")
	}
	validateThrottle(d, c.Throttle)
	names := map[string]bool{}
	for i := range c.Listeners {
		path := fmt.Sprintf("listeners[%d]", i)
		l := &c.Listeners[i]
		if names[l.Name] {
			d.problemAt(path+".name", "listener name %q used twice", l.Name)
		}
		names[l.Name] = true
		validateListener(d, c, l, path, ports)
	}
}

func validateBackend(d *decoder, name string, b Backend) {
	path := "backends." + name
	if b.Address == "" {
		d.problemAt(path, "back-end %q has no address", name)
	}
	if b.Weight < 0 {
		d.problemAt(path+".weight", "weight must not be negative")
	}
}

func validateListener(d *decoder, c *Config, l *Listener, path string, ports map[string][]bound) {
	if l.Name == "" {
		d.problemAt(path, "listener has no name")
	}
	validateListen(d, l, path, ports)
	if !slices.Contains(Protocols, l.Protocol) {
		// Every other setting means something only for a protocol: one
		// message for the root cause, none for what follows from it.
		oneOf(d, path+".protocol", l.Protocol, Protocols...)
		return
	}
	validatePool(d, c, l, path)
	validateHealth(d, l.Health, path+".health")
	validateTLS(d, c, l, path)
	validateProtocol(d, c, l, path)
	if l.Limits.MaxConnections < 0 || l.Limits.MaxPerIP < 0 {
		d.problemAt(path+".limits", "limits must not be negative")
	}
}

// validateListen checks a listener's listen addresses, and that no other
// listener binds them.
func validateListen(d *decoder, l *Listener, path string, ports map[string][]bound) {
	if len(l.Listen) == 0 {
		d.problemAt(path, "listener %q has no listen address", l.Name)
	}
	for j, addr := range l.Listen {
		p := fmt.Sprintf("%s.listen[%d]", path, j)
		if len(l.Listen) == 1 {
			p = path + ".listen"
		}
		port, ok := checkHostPort(d, p, addr)
		if ok {
			checkPortFree(d, ports, p, addr, port)
		}
	}
}

func validatePool(d *decoder, c *Config, l *Listener, path string) {
	if len(l.Backends) == 0 {
		d.problemAt(path, "listener %q has no backends", l.Name)
	}
	seen := map[string]bool{}
	needPort := false
	for j, name := range l.Backends {
		p := fmt.Sprintf("%s.backends[%d]", path, j)
		b, ok := c.Backends[name]
		if !ok {
			d.problemAt(p, "unknown back-end %q (define it under backends:)", name)
		}
		if _, _, err := net.SplitHostPort(b.Address); err != nil {
			needPort = true
		}
		if seen[name] {
			d.problemAt(p, "back-end %q listed twice", name)
		}
		seen[name] = true
	}
	if (needPort || l.Port != 0) && (l.Port < 1 || l.Port > 65535) {
		d.problemAt(path+".port", "port %d out of range 1-65535 (back-ends without a port of their own use it)", l.Port)
	}
	oneOf(d, path+".balance", l.Balance, proxy.RoundRobin, proxy.LeastConn)
	affinities := []string{proxy.AffinityNone, proxy.AffinitySourceIP}
	if l.Protocol == "smtp" {
		affinities = append(affinities, smtp.AffinityUser)
	}
	oneOf(d, path+".affinity", l.Affinity, affinities...)
}

func validateHealth(d *decoder, h *Health, path string) {
	if !slices.Contains(health.Kinds, h.Probe) {
		oneOf(d, path+".probe", h.Probe, health.Kinds...)
	} else if _, err := health.New(h.Probe, h.Options()); err != nil {
		d.problemAt(path, "%v", err)
	}
	if h.Rise < 0 || h.Fall < 0 {
		d.problemAt(path, "rise and fall must not be negative")
	}
	if h.Timeout > h.Interval {
		d.problemAt(path+".timeout", "timeout %s is longer than the interval %s", h.Timeout, h.Interval)
	}
	if h.Port < 0 || h.Port > 65535 {
		d.problemAt(path+".port", "port %d out of range 1-65535", h.Port)
	}
}

// validateTLS checks a listener's TLS towards clients and back-ends.
func validateTLS(d *decoder, c *Config, l *Listener, path string) {
	if err := l.TLS.Validate(); err != nil {
		d.problemIn(path+".tls", err, "tls: %v", err)
	} else if l.TLS.TLS() {
		checkCertificateRef(d, c, path+".tls.certificates", l.TLS.Certificates)
	}
	if err := l.BackendTLS.Validate(); err != nil {
		d.problemIn(path+".backend_tls", err, "backend_tls: %v", err)
	}
	if l.Protocol == "tcp" && (l.TLS.Mode == tls.ModeStartTLS || l.BackendTLS.Mode == tls.ModeStartTLS) {
		d.problemAt(path+".tls", "protocol tcp does not read the stream, so it cannot do STARTTLS: use implicit/tls or a mail protocol")
	}
}

// validateProtocol checks the options of the listener's protocol, and
// that options of another protocol are not set.
func validateProtocol(d *decoder, c *Config, l *Listener, path string) {
	check := func(key string, used bool, v interface{ Validate() error }) {
		if _, set := d.nodes[path+"."+key]; set && !used {
			d.problemAt(path+"."+key, "%s: options of another protocol on a %s listener", key, l.Protocol)
			return
		}
		if used {
			if err := v.Validate(); err != nil {
				d.problemIn(path+"."+key, err, "%s: %v", key, err)
			}
		}
	}
	mailLogin := l.Protocol == "pop3" || l.Protocol == "imap"
	check("route", mailLogin, &l.Route)
	check("pop3", l.Protocol == "pop3", &l.POP3)
	check("imap", l.Protocol == "imap", &l.IMAP)
	check("smtp", l.Protocol == "smtp", &l.SMTP)
	check("https", l.Protocol == "https", &l.HTTPS)
	if l.Protocol == "https" {
		validateHTTPS(d, c, l, path)
	}
}

// validateHTTPS checks what an https listener adds: its services' back-ends
// exist, and its TLS is implicit or none (HTTP has no STARTTLS).
func validateHTTPS(d *decoder, c *Config, l *Listener, path string) {
	if l.TLS.Mode == tls.ModeStartTLS || l.BackendTLS.Mode == tls.ModeStartTLS {
		d.problemAt(path+".tls", "HTTPS has no STARTTLS: use mode implicit or none")
	}
	for _, name := range slices.Sorted(maps.Keys(l.HTTPS.Services)) {
		svc := l.HTTPS.Services[name]
		p := path + ".https.services." + name
		for j, b := range svc.Backends {
			if _, ok := c.Backends[b]; !ok {
				d.problemAt(fmt.Sprintf("%s.backends[%d]", p, j), "unknown back-end %q (define it under backends:)", b)
			}
		}
		if svc.Balance != "" {
			oneOf(d, p+".balance", svc.Balance, proxy.RoundRobin, proxy.LeastConn)
		}
	}
}

// checkCertificateRef reports a reference to a certificate set that does
// not exist.
func checkCertificateRef(d *decoder, c *Config, path, ref string) {
	if _, ok := c.Certificates[c.CertificateSet(ref)]; !ok {
		d.problemAt(path, "no certificate set %q under certificates:", c.CertificateSet(ref))
	}
}

// bound is one listen address already taken, and where.
type bound struct{ host, path string }

// checkPortFree reports a port bound twice: on the same host, or on any
// host when one of the two binds the wildcard address. Port 0 (any free
// port) never clashes.
func checkPortFree(d *decoder, ports map[string][]bound, path, addr, port string) {
	if port == "0" {
		return
	}
	host, _, _ := net.SplitHostPort(addr)
	for _, b := range ports[port] {
		if b.host == host || isWildcard(b.host) || isWildcard(host) {
			d.problemAt(path, "port %s is already used by %s", port, b.path)
			return
		}
	}
	ports[port] = append(ports[port], bound{host, path})
}

func isWildcard(host string) bool {
	return host == "" || host == "0.0.0.0" || host == "::"
}

// checkHostPort validates "host:port" and returns the port.
func checkHostPort(d *decoder, path, addr string) (string, bool) {
	host, port, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(port)
	// Port 0 means any free port: for tests and benchmarks.
	if err != nil || perr != nil || n < 0 || n > 65535 {
		d.problemAt(path, "bad listen address %q: want host:port with a port from 1 to 65535", addr)
		return "", false
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		d.problemAt(path, "bad listen address %q: the host must be an IP address", addr)
		return "", false
	}
	return port, true
}

// oneOf reports a value outside a closed set, naming its key.
func oneOf(d *decoder, path, value string, allowed ...string) {
	if !slices.Contains(allowed, value) {
		key := path[strings.LastIndexAny(path, ".]")+1:]
		d.problemAt(path, "%s: unknown value %q (want one of: %s)", key, value, strings.Join(allowed, ", "))
	}
}

// validateThrottle checks the realms: NetBIOS names and DNS domains, so
// that a typo cannot silently keep two spellings of one user apart.
func validateThrottle(d *decoder, t LoginThrottle) {
	for _, nb := range slices.Sorted(maps.Keys(t.Realms)) {
		if nb == "" || strings.ContainsAny(nb, `\@. `) {
			d.problemAt("throttle.realms", "throttle.realms: %q is not a NetBIOS domain name", nb)
		}
		if !dnsDomain(t.Realms[nb]) {
			d.problemAt("throttle.realms."+nb, "throttle.realms.%s: %q is not a DNS domain", nb, t.Realms[nb])
		}
	}
	if t.DefaultRealm != "" && !dnsDomain(t.DefaultRealm) {
		d.problemAt("throttle.default_realm", "throttle.default_realm: %q is not a DNS domain", t.DefaultRealm)
	}
}

// dnsDomain reports whether s looks like a DNS domain (example.com).
func dnsDomain(s string) bool {
	return s != "" && !strings.ContainsAny(s, `\@ /:`) && !strings.HasPrefix(s, ".") && !strings.HasSuffix(s, ".")
}

// xclientTrustWarnings warns when a back-end that a relay listener
// reaches with XCLIENT is also reached by a passthrough listener from the
// same source address: the back-end trusts that address for XCLIENT, and
// passthrough forwards whatever a client sends once it has spliced, so a
// client could claim any address and relay.
func (c *Config) checkXClientTrust() Problems {
	trusted := map[string]string{} // back-end + source address → relay listener
	for _, l := range c.Listeners {
		if l.Protocol == "smtp" && l.SMTP.Mode != smtp.ModePassthrough && l.SMTP.XClient {
			for _, b := range l.Backends {
				trusted[b+"\x00"+l.SMTP.SourceAddress] = l.Name
			}
		}
	}
	var out Problems
	for i, l := range c.Listeners {
		if l.Protocol != "smtp" || l.SMTP.Mode != smtp.ModePassthrough {
			continue
		}
		for _, b := range l.Backends {
			if relay, ok := trusted[b+"\x00"+l.SMTP.SourceAddress]; ok {
				out = append(out, c.at(fmt.Sprintf("listeners[%d].backends", i), true, "listeners %s and %s reach back-end %s from the same source address %q: "+
					"it trusts that address for XCLIENT (relay listener %s), and passthrough cannot keep a client's own XCLIENT from it after the splice; "+
					"give the passthrough listener its own smtp.source_address", relay, l.Name, b, l.SMTP.SourceAddress, relay))
			}
		}
	}
	return out
}

// Options maps a health config to the probe's options.
func (h *Health) Options() health.Options {
	return health.Options{
		StartTLS:     h.StartTLS,
		HELO:         h.HELO,
		Path:         h.Path,
		Host:         h.Host,
		ExpectStatus: h.ExpectStatus,
		ExpectBody:   h.ExpectBody,
	}
}
