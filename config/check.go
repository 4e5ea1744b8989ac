package config

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// The one checker. `gatehouse validate`, `gatehouse run` and every reload
// call Load, so validate refuses exactly what run would refuse before it
// binds a port, and both name the line and column at fault:
//
//   - Parse: YAML, keys, types, values, references (the text alone);
//   - Check: the files the configuration names (certificate and key pairs,
//     their match and validity, map files, CA files), as NewServer would
//     read them; and warnings, which never refuse: a TLS mode unusual for
//     its port, a back-end name that does not resolve.

// DefaultResolveTimeout bounds all the back-end name lookups of one check
// together: a missing name must not hold up a start or a reload.
const DefaultResolveTimeout = 2 * time.Second

// Resolver looks up host names; *net.Resolver is one.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// CheckOptions choose how far Check looks beyond the configuration's text.
type CheckOptions struct {
	// Offline skips every check that reads another file or asks DNS, for
	// configurations written for another machine (the shipped examples).
	Offline bool
	// Resolver looks up back-end names; nil means net.DefaultResolver.
	Resolver Resolver
	// ResolveTimeout bounds all lookups together (they run in parallel);
	// 0 means DefaultResolveTimeout.
	ResolveTimeout time.Duration
	// Now is when certificates must be valid; zero means time.Now().
	Now time.Time
}

// source is where each value of a Config stands in its file.
type source struct {
	file  string
	nodes map[string]*yaml.Node
}

// Load reads a configuration file and runs every check: Parse's,
// then Check's. It returns the Config and the warnings; its error, if
// any, is a Problems listing every problem found, or a read error.
func Load(ctx context.Context, path string, opts CheckOptions) (*Config, Problems, error) {
	cfg, err := parseFile(path)
	if err != nil {
		return nil, nil, err
	}
	errs, warnings := cfg.Check(ctx, opts)
	if len(errs) > 0 {
		return nil, warnings, errs
	}
	return cfg, warnings, nil
}

// LoadFile is Load without the warnings (and so without DNS lookups):
// it refuses what `gatehouse run` refuses.
func LoadFile(path string) (*Config, error) {
	cfg, err := parseFile(path)
	if err != nil {
		return nil, err
	}
	if errs := cfg.checkFiles(time.Now()); len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// parseFile reads a configuration file and parses it.
func parseFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Check runs the checks that need more than the configuration's text.
// errs are what NewServer would fail on; warnings are served as written.
// With opts.Offline only the warnings that need nothing else remain.
func (c *Config) Check(ctx context.Context, opts CheckOptions) (errs, warnings Problems) {
	warnings = append(c.checkTLSPorts(), c.checkXClientTrust()...)
	if opts.Offline {
		return nil, warnings
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	errs = c.checkFiles(now)
	return errs, append(warnings, c.checkNames(ctx, opts)...)
}

// at returns a problem at a config path's line and column.
func (c *Config) at(path string, warning bool, format string, args ...any) Problem {
	p := Problem{Msg: fmt.Sprintf(format, args...), Warning: warning}
	if c.src != nil {
		n := nodeAt(c.src.nodes, path)
		p.File, p.Line, p.Col = c.src.file, n.Line, n.Column
	}
	return p
}

// checkFiles reads every file NewServer would read: the certificate sets
// in use, back-end CA files and map files.
func (c *Config) checkFiles(now time.Time) Problems {
	var errs Problems
	for _, name := range slices.Sorted(maps.Keys(c.Certificates)) {
		if !c.certificateSetUsed(name) {
			continue // NewServer starts only the sets something serves
		}
		for _, fp := range c.Certificates[name].CheckFiles(now) {
			errs = append(errs, c.at("certificates."+name+"."+fp.Key, false, "certificates %s: %v", name, fp.Err))
		}
	}
	for i, l := range c.Listeners {
		path := fmt.Sprintf("listeners[%d]", i)
		if fp := l.BackendTLS.CheckFiles(); fp != nil {
			errs = append(errs, c.at(path+".backend_tls."+fp.Key, false, "backend_tls: %v", fp.Err))
		}
		if (l.Protocol == "pop3" || l.Protocol == "imap") && l.Route.By == proxy.RouteMap {
			if err := proxy.CheckMapFile(l.Route.File, l.Name, l.Backends); err != nil {
				errs = append(errs, c.at(path+".route.file", false, "route: %v", err))
			}
		}
	}
	return errs
}

// certificateSetUsed reports whether anything serves the named set: a
// TLS listener, the port-80 companion, or an admin listener off loopback.
func (c *Config) certificateSetUsed(name string) bool {
	for _, l := range c.Listeners {
		if l.TLS.TLS() && c.CertificateSet(l.TLS.Certificates) == name {
			return true
		}
	}
	if len(c.HTTP.Listen) > 0 && c.CertificateSet(c.HTTP.Certificates) == name {
		return true
	}
	return !c.Admin.OnLoopback() && c.CertificateSet(c.Admin.Certificates) == name
}

// implicitPorts are where clients start TLS with the first byte (RFC 8314),
// plainPorts where they start in plaintext and may ask for STARTTLS.
var (
	implicitPorts = map[string]string{"465": "SMTP submission", "993": "IMAP", "995": "POP3"}
	plainPorts    = map[string]string{"25": "SMTP", "587": "SMTP submission", "110": "POP3", "143": "IMAP"}
)

// checkTLSPorts warns of a TLS mode that the clients of a well-known port
// do not expect: they would hang or fail at the handshake.
func (c *Config) checkTLSPorts() Problems {
	var warnings Problems
	for i, l := range c.Listeners {
		path := fmt.Sprintf("listeners[%d].tls.mode", i)
		for _, addr := range l.Listen {
			_, port, _ := net.SplitHostPort(addr)
			switch {
			case l.TLS.Mode == tls.ModeStartTLS && implicitPorts[port] != "":
				warnings = append(warnings, c.at(path, true,
					"tls: starttls on port %s, where %s clients start TLS with the first byte (RFC 8314): use mode implicit",
					port, implicitPorts[port]))
			case l.TLS.Mode == tls.ModeImplicit && plainPorts[port] != "":
				warnings = append(warnings, c.at(path, true,
					"tls: implicit on port %s, where %s clients start in plaintext and ask for STARTTLS: use mode starttls",
					port, plainPorts[port]))
			}
		}
	}
	return warnings
}

// checkNames looks up every back-end host name in parallel, all bounded
// by one timeout, and warns of those that do not resolve: gatehouse
// starts anyway, and sessions reach such a back-end once its name
// resolves.
func (c *Config) checkNames(ctx context.Context, opts CheckOptions) Problems {
	timeout := opts.ResolveTimeout
	if timeout == 0 {
		timeout = DefaultResolveTimeout
	}
	var r Resolver = net.DefaultResolver
	if opts.Resolver != nil {
		r = opts.Resolver
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	names := slices.Sorted(maps.Keys(c.Backends))
	found := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		host := backendHost(c.Backends[name].Address)
		if host != "" && net.ParseIP(host) == nil {
			wg.Go(func() { found[i] = lookup(ctx, r, host) })
		}
	}
	wg.Wait()
	var warnings Problems
	for i, err := range found {
		if err != nil {
			warnings = append(warnings, c.at("backends."+names[i]+".address", true,
				"back-end %s: %v; sessions cannot reach it until it resolves", names[i], err))
		}
	}
	return warnings
}

// lookup resolves host, refusing at once the names RFC 6761 section 6.4
// reserves as never resolving.
func lookup(ctx context.Context, r Resolver, host string) error {
	if h := strings.ToLower(strings.TrimSuffix(host, ".")); h == "invalid" || strings.HasSuffix(h, ".invalid") {
		return fmt.Errorf("%s does not resolve: names under .invalid never do (RFC 6761)", host)
	}
	addrs, err := r.LookupHost(ctx, host)
	if err == nil && len(addrs) == 0 {
		err = fmt.Errorf("no address")
	}
	if err != nil {
		return fmt.Errorf("%s does not resolve: %w", host, err)
	}
	return nil
}

// backendHost returns the host of a back-end address, with or without a
// port.
func backendHost(address string) string {
	if host, _, err := net.SplitHostPort(address); err == nil {
		return host
	}
	return strings.Trim(address, "[]")
}
