package https

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Services, as the config and the metrics spell them. A request belongs to
// the service its first path segment names (see Classify); Default takes
// every other path.
const (
	OWA          = "owa"
	ECP          = "ecp"
	EWS          = "ews"
	ActiveSync   = "activesync"
	RPC          = "rpc"
	MAPI         = "mapi"
	Autodiscover = "autodiscover"
	OAB          = "oab"
	PowerShell   = "powershell"
	Default      = "default"
)

// serviceNames lists every service, Default last.
var serviceNames = []string{OWA, ECP, EWS, ActiveSync, RPC, MAPI, Autodiscover, OAB, PowerShell, Default}

// Services returns the names of every service, Default last: the keys of
// Config.Services and Frontend.Services, and the health checks
// "<listener>/<service>".
func Services() []string { return slices.Clone(serviceNames) }

// Affinities a service may use, as the config spells them.
const (
	AffinityNone           = "none"
	AffinityCookie         = "cookie"
	AffinitySourceIP       = "source-ip"
	AffinityActiveSyncUser = "activesync-user"
	AffinityRPCChannel     = "rpc-channel"
	AffinityMAPIContext    = "mapi-context"
)

var affinities = []string{AffinityNone, AffinityCookie, AffinitySourceIP, AffinityActiveSyncUser, AffinityRPCChannel, AffinityMAPIContext}

// TLS handling of a service, as the config spells it.
const (
	TLSTerminate   = "terminate"
	TLSPassthrough = "passthrough"
)

// Config is the https: section of a listener. The zero value, after
// SetDefaults, fronts an Exchange farm: every service on the listener's
// back-ends, no affinity, Exchange's idle timeouts, / redirected to /owa/.
type Config struct {
	// Services tunes single services (owa, ecp, ews, activesync, rpc,
	// mapi, autodiscover, oab, powershell, default). A service not listed
	// uses the listener's back-ends, balance and health, no affinity and
	// its default idle timeout.
	Services map[string]Service `yaml:"services"`
	// RootRedirect is where a request for "/" is sent (302); "" means
	// "/owa/", "off" passes "/" to the back-ends.
	RootRedirect string `yaml:"root_redirect"`
	// RedirectHTTPS, on a plain-HTTP listener (port 80), answers every
	// request with a 308 to the same URL over https, except ACME HTTP-01
	// challenges. False serves plain HTTP.
	RedirectHTTPS bool `yaml:"redirect_https"`
	// HTTPSPort is the port those redirects name; 0 means 443, which the
	// URL leaves out.
	HTTPSPort int `yaml:"https_port"`
	// TrustedForwarders lists the CIDRs of upstream proxies whose
	// X-Forwarded-For, X-Forwarded-Proto and X-Real-IP are believed and
	// extended. Empty means nobody's: those headers are dropped from every
	// request and set afresh.
	TrustedForwarders []string `yaml:"trusted_forwarders"`
	// CookieName is the name of the affinity cookie of services with
	// affinity "cookie"; "" means "gatehouse_affinity".
	CookieName string `yaml:"cookie_name"`
	// CookieSecret signs affinity cookies (HMAC-SHA256). "" means a random
	// secret per process: cookies then stop working across restarts and
	// between several gatehouse instances, so set it for a farm.
	CookieSecret string `yaml:"cookie_secret"`
	// KeepAlive is how long a client connection may wait between two
	// requests; 0 means 10 minutes (Outlook keeps idle connections).
	KeepAlive time.Duration `yaml:"keep_alive"`
	// HeaderTimeout bounds reading one request head once its first byte
	// has arrived, and a new connection's wait for its first request; 0
	// means 30 seconds.
	HeaderTimeout time.Duration `yaml:"header_timeout"`
	// MaxHeaderBytes caps the size of a request or response head; 0 means
	// 64 KiB (OWA's cookies alone can take several KiB).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// CertCheckInterval is how often the edge certificate is looked at for
	// a change, which triggers the Extended Protection comparison with
	// every back-end's certificate; 0 means 1 minute.
	CertCheckInterval time.Duration `yaml:"cert_check_interval"`
}

// Service is the configuration of one service of an https listener.
type Service struct {
	// Backends names the service's own back-ends; empty means the
	// listener's.
	Backends []string `yaml:"backends"`
	// Balance is round-robin or least-conn; "" means the listener's.
	Balance string `yaml:"balance"`
	// Affinity is none, cookie, source-ip, activesync-user, rpc-channel or
	// mapi-context; "" means none, which is right for Exchange 2013+.
	Affinity string `yaml:"affinity"`
	// Idle ends a request when no byte has moved either way for this long;
	// 0 means the service's default (DefaultIdle).
	Idle time.Duration `yaml:"idle"`
	// Health is the service's check; absent means GET
	// /<vdir>/healthcheck.htm expecting 200 and "200 OK".
	Health *Health `yaml:"health"`
	// TLS is "terminate" (the default when empty) or "passthrough": TLS
	// connections whose SNI is one of SNI go to the service's back-ends
	// untouched (layer 4), for Extended Protection without a shared
	// certificate.
	TLS string `yaml:"tls"`
	// SNI lists the server names passed through; required with tls
	// passthrough, unused otherwise.
	SNI []string `yaml:"sni"`
	// Allow lists the CIDRs (or single addresses) of the clients the
	// service serves; every other client is answered 403. The address is
	// the connection's, or the one a trusted load balancer's PROXY header
	// names (never X-Forwarded-For). A service passed through by SNI
	// answers a TLS access_denied alert instead. Empty allows everyone.
	Allow []string `yaml:"allow"`
}

// Health is a service's HTTP health check.
type Health struct {
	// Path is what the check GETs; "" means /<vdir>/healthcheck.htm.
	Path string `yaml:"path"`
	// ExpectStatus is the healthy status; 0 means 200.
	ExpectStatus int `yaml:"expect_status"`
	// ExpectBody must appear in the body; "" means "200 OK" for the
	// default path and any body for a configured one.
	ExpectBody string `yaml:"expect_body"`
}

// healthPaths are Exchange's managed-availability pages per service.
var healthPaths = map[string]string{
	OWA:          "/owa/healthcheck.htm",
	ECP:          "/ecp/healthcheck.htm",
	EWS:          "/EWS/healthcheck.htm",
	ActiveSync:   "/Microsoft-Server-ActiveSync/healthcheck.htm",
	RPC:          "/rpc/healthcheck.htm",
	MAPI:         "/mapi/healthcheck.htm",
	Autodiscover: "/Autodiscover/healthcheck.htm",
	OAB:          "/OAB/healthcheck.htm",
	PowerShell:   "/PowerShell/healthcheck.htm",
	Default:      "/owa/healthcheck.htm",
}

// DefaultIdle returns the idle timeout of a service when none is set: long
// enough that Exchange, not gatehouse, ends a legitimate long request
// (ActiveSync heartbeats reach 59 minutes, RPC channels ping every 12 to 15
// minutes, EWS streaming subscriptions last up to 30 minutes, MAPI sends a
// PENDING chunk at least every 30 seconds and NotificationWait lasts 5).
func DefaultIdle(service string) time.Duration {
	switch service {
	case ActiveSync:
		return 61 * time.Minute
	case RPC:
		return 40 * time.Minute
	case EWS:
		return 35 * time.Minute
	case MAPI, OWA, ECP:
		return 10 * time.Minute
	}
	return 5 * time.Minute
}

// SetDefaults fills every zero field with its documented default.
func (c *Config) SetDefaults() {
	if c.RootRedirect == "" {
		c.RootRedirect = "/owa/"
	}
	if c.CookieName == "" {
		c.CookieName = "gatehouse_affinity"
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 10 * time.Minute
	}
	if c.HeaderTimeout == 0 {
		c.HeaderTimeout = 30 * time.Second
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.CertCheckInterval == 0 {
		c.CertCheckInterval = time.Minute
	}
	for name, s := range c.Services {
		s.setDefaults(name)
		c.Services[name] = s
	}
}

func (s *Service) setDefaults(name string) {
	if s.Affinity == "" {
		s.Affinity = AffinityNone
	}
	if s.Idle == 0 {
		s.Idle = DefaultIdle(name)
	}
	if s.TLS == "" {
		s.TLS = TLSTerminate
	}
}

// Validate reports the first problem, naming the YAML key at fault.
func (c *Config) Validate() error {
	if c.RootRedirect != "" && c.RootRedirect != "off" && !strings.HasPrefix(c.RootRedirect, "/") {
		return fmt.Errorf("root_redirect: %q must be a path starting with / or off", c.RootRedirect)
	}
	if c.CookieName != "" && !isToken(c.CookieName) {
		return fmt.Errorf("cookie_name: %q is not a valid cookie name", c.CookieName)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"keep_alive", c.KeepAlive}, {"header_timeout", c.HeaderTimeout}, {"cert_check_interval", c.CertCheckInterval}} {
		if d.v < 0 {
			return fmt.Errorf("%s: %v is negative", d.key, d.v)
		}
	}
	if c.MaxHeaderBytes < 0 || (c.MaxHeaderBytes > 0 && c.MaxHeaderBytes < 4096) {
		return fmt.Errorf("max_header_bytes: %d is below 4096", c.MaxHeaderBytes)
	}
	if _, err := c.trustedPrefixes(); err != nil {
		return err
	}
	if _, err := c.allowPrefixes(); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		if !slices.Contains(serviceNames, name) {
			return fmt.Errorf("services.%s: unknown service (want one of %s)", name, strings.Join(serviceNames, ", "))
		}
		if err := c.Services[name].validate(); err != nil {
			return fmt.Errorf("services.%s.%w", name, err)
		}
	}
	return c.validateSNI()
}

func (s Service) validate() error {
	if s.Affinity != "" && !slices.Contains(affinities, s.Affinity) {
		return fmt.Errorf("affinity: %q: want one of %s", s.Affinity, strings.Join(affinities, ", "))
	}
	if s.Balance != "" && s.Balance != "round-robin" && s.Balance != "least-conn" {
		return fmt.Errorf("balance: %q: want round-robin or least-conn", s.Balance)
	}
	if s.Idle < 0 {
		return fmt.Errorf("idle: %v is negative", s.Idle)
	}
	if s.Health != nil && s.Health.Path != "" && !strings.HasPrefix(s.Health.Path, "/") {
		return fmt.Errorf("health.path: %q must start with /", s.Health.Path)
	}
	switch s.TLS {
	case "", TLSTerminate:
		if len(s.SNI) > 0 {
			return errors.New("sni: only used with tls: passthrough")
		}
	case TLSPassthrough:
		if len(s.SNI) == 0 {
			return errors.New("sni: tls passthrough needs at least one server name")
		}
	default:
		return fmt.Errorf("tls: %q: want terminate or passthrough", s.TLS)
	}
	return nil
}

// validateSNI refuses one server name passed through for two services.
func (c *Config) validateSNI() error {
	seen := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		for _, sni := range c.Services[name].SNI {
			n := strings.ToLower(sni)
			if other, dup := seen[n]; dup {
				return fmt.Errorf("services.%s.sni: %q is already passed through for %s", name, sni, other)
			}
			seen[n] = name
		}
	}
	return nil
}

// trustedPrefixes parses TrustedForwarders.
func (c *Config) trustedPrefixes() ([]netip.Prefix, error) {
	return parsePrefixes("trusted_forwarders", c.TrustedForwarders)
}

// allowPrefixes parses every service's Allow list; a service without
// one is absent from the map.
func (c *Config) allowPrefixes() (map[string][]netip.Prefix, error) {
	out := map[string][]netip.Prefix{}
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		if len(c.Services[name].Allow) == 0 {
			continue
		}
		p, err := parsePrefixes("allow", c.Services[name].Allow)
		if err != nil {
			return nil, fmt.Errorf("services.%s.%w", name, err)
		}
		out[name] = p
	}
	return out, nil
}

// parsePrefixes parses a list of CIDRs or single addresses.
func parsePrefixes(key string, list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%s[%d]: %q is not a CIDR or address", key, i, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// HealthCheck returns the check of a service: the path to GET, the
// healthy status and a string the body must contain ("" for any).
func (c *Config) HealthCheck(service string) (path string, status int, body string) {
	path, status, body = healthPaths[service], 200, "200 OK"
	if path == "" {
		path = healthPaths[Default]
	}
	h := c.Services[service].Health
	if h == nil {
		return path, status, body
	}
	if h.Path != "" {
		path, body = h.Path, ""
	}
	if h.ExpectStatus != 0 {
		status = h.ExpectStatus
	}
	if h.ExpectBody != "" {
		body = h.ExpectBody
	}
	return path, status, body
}

// service returns the settings of a service with defaults applied.
func (c *Config) service(name string) Service {
	s := c.Services[name]
	s.setDefaults(name)
	return s
}

// isToken reports whether s is an RFC 9110 token (header names, cookie
// names, methods).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChar[s[i]] {
			return false
		}
	}
	return true
}

// tokenChar marks the bytes allowed in a token (RFC 9110 section 5.6.2).
var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()
