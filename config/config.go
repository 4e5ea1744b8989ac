package config

import (
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/https"
	"github.com/gatehouse-proxy/gatehouse/protocols/imap"
	"github.com/gatehouse-proxy/gatehouse/protocols/pop3"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// Config is the whole configuration file. Every default lives in
// applyDefaults (defaults.go) and is documented on the field it fills.
type Config struct {
	// StateDir holds certificates and other state; "" means
	// /var/lib/gatehouse.
	StateDir string `yaml:"state_dir"`
	// ShutdownGrace is how long live sessions may run after SIGTERM before
	// they are closed; 0 means 30s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// ReloadGrace is how long, after a reload, the live sessions of a
	// listener or back-end the new configuration no longer has may go on
	// before they are told goodbye and closed (sessions of everything that
	// stays are never ended by a reload); 0 means 30s.
	ReloadGrace time.Duration `yaml:"reload_grace"`
	// UpgradeGrace is how long, after `gatehouse upgrade` handed the
	// sockets to a new binary, the old process keeps its live sessions
	// before it says goodbye to the rest and exits; 0 means 1h (longer
	// than an ActiveSync Ping's 59 minutes).
	UpgradeGrace time.Duration `yaml:"upgrade_grace"`
	// Admin is the listener for metrics and the status API.
	Admin Admin `yaml:"admin"`
	// Log sets the log level and format.
	Log Log `yaml:"log"`
	// Certificates are the named certificate sets that TLS listeners serve
	// (ACME, files or a local CA). A listener's tls.certificates names one;
	// the set named "default", or the only one, serves the others. Empty
	// means one self-signed set for localhost, made only if a listener
	// needs TLS.
	Certificates map[string]tls.Certificates `yaml:"certificates"`
	// HTTP is the port-80 companion of the HTTPS listeners: it answers
	// ACME HTTP-01 challenges and redirects every other request to https.
	HTTP HTTPRedirect `yaml:"http"`
	// Backends names every back-end server once; listeners refer to them.
	Backends map[string]Backend `yaml:"backends"`
	// Listeners are the ports gatehouse owns.
	Listeners []Listener `yaml:"listeners"`
	// Throttle configures the login throttle every listener shares.
	Throttle LoginThrottle `yaml:"throttle"`

	// src is where each value stands in the file it was parsed from, so
	// that Check names the line of a missing file; nil for a Config built
	// in code.
	src *source
}

// LoginThrottle configures the login throttle (proxy.Throttle). Its
// counts are one per user whatever the spelling: realms fold `CORP\alice`
// (HTTPS), `alice@example.com` (mail) and a bare `alice` into one key.
type LoginThrottle struct {
	// Realms maps NetBIOS domain names to DNS domains (CORP: example.com);
	// empty means only `DNS-DOMAIN\user` is folded into `user@DNS-DOMAIN`.
	Realms map[string]string `yaml:"realms"`
	// DefaultRealm is the DNS domain of a bare user name; "" leaves bare
	// names apart from `user@domain` ones.
	DefaultRealm string `yaml:"default_realm"`
}

// Admin configures the admin listener.
type Admin struct {
	// Listen is the admin address; "" means 127.0.0.1:9900, "off"
	// disables the admin listener.
	Listen string `yaml:"listen"`
	// Token, when set, is required by everything the admin listener serves
	// but /healthz: as a bearer token, or as the basic-auth password of
	// the status page. Required (at least 16 characters) when Listen is
	// not a loopback address; "" on loopback means no token is asked.
	Token string `yaml:"token"`
	// Names are host names, besides localhost and the listener's own IP
	// addresses, by which clients reach the admin listener: a request
	// whose Host is anything else is refused (DNS rebinding). Empty means
	// none.
	Names []string `yaml:"names"`
	// Pprof serves Go's profiler at /debug/pprof/ (behind Token when set);
	// false (the default) means not served.
	Pprof bool `yaml:"pprof"`
	// Certificates names the certificate set the admin listener serves
	// HTTPS with when Listen is not a loopback address (it always is
	// then); "" means the default set.
	Certificates string `yaml:"certificates"`
	// DisableGrace is how long a disabled back-end's live sessions may go
	// on before they are closed; 0 means 10s.
	DisableGrace time.Duration `yaml:"disable_grace"`
}

// Log configures logging to standard error.
type Log struct {
	// Level is debug, info, warn or error; "" means info.
	Level string `yaml:"level"`
	// Format is text or json; "" means text.
	Format string `yaml:"format"`
}

// Backend is one back-end server.
type Backend struct {
	// Address is a host or IP, optionally with ":port"; without a port, the
	// listener's port applies. Required.
	Address string `yaml:"address"`
	// Weight is the back-end's share of new sessions; 0 means 1.
	Weight int `yaml:"weight"`
}

// Listener is one service gatehouse offers on explicit ports.
type Listener struct {
	// Name identifies the listener in logs and metrics; required, unique.
	Name string `yaml:"name"`
	// Protocol is what the listener speaks: "tcp" (the default) relays
	// bytes without looking at them; "pop3" and "imap" log clients in at
	// the edge and route them by user; "smtp" relays mail command by
	// command (or passes Exchange's AUTH through); "https" proxies
	// Exchange's web services request by request, per service.
	Protocol string `yaml:"protocol"`
	// Listen lists "address:port" to bind, one string or a list; required.
	Listen StringList `yaml:"listen"`
	// Backends names the back-ends in the pool; required.
	Backends []string `yaml:"backends"`
	// Port is the back-end port for back-ends whose address has none; 0
	// means the port of the first listen address.
	Port int `yaml:"port"`
	// Balance is round-robin (weighted; the default) or least-conn.
	Balance string `yaml:"balance"`
	// Affinity is none or source-ip: one client address sticks to one
	// back-end by rendezvous hashing while it is up; smtp listeners may
	// also route by user (after AUTH). "" means source-ip for smtp, none
	// for the others.
	Affinity string `yaml:"affinity"`
	// Health is the active check of the pool's back-ends; absent means a
	// tcp connect check with the defaults below.
	Health *Health `yaml:"health"`
	// Timeouts bound connecting and idling.
	Timeouts Timeouts `yaml:"timeouts"`
	// Limits cap connections.
	Limits Limits `yaml:"limits"`
	// ProxyProtocol sends and accepts PROXY protocol headers.
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`
	// TLS is TLS towards clients: mode none (default), implicit (TLS from
	// the first byte, as on 443, 465, 993, 995) or starttls (mail
	// protocols), with the certificate set to serve.
	TLS tls.Listener `yaml:"tls"`
	// BackendTLS is TLS towards the back-ends and their health checks:
	// mode none (default), tls or starttls, and how to trust them.
	BackendTLS tls.Backend `yaml:"backend_tls"`
	// Route decides the back-end of a logged-in user (pop3, imap, smtp
	// with affinity user): by hash (default), a map file, or an
	// auth_http-style lookup.
	Route proxy.RouteConfig `yaml:"route"`
	// POP3 holds the options of protocol pop3.
	POP3 pop3.Config `yaml:"pop3"`
	// IMAP holds the options of protocol imap.
	IMAP imap.Config `yaml:"imap"`
	// SMTP holds the options of protocol smtp: relay or passthrough mode,
	// AUTH, client address forwarding, limits.
	SMTP smtp.Config `yaml:"smtp"`
	// HTTPS holds the options of protocol https: per-service back-ends,
	// balancing, affinity, idle timeouts and health checks (OWA, ECP, EWS,
	// ActiveSync, RPC, MAPI, Autodiscover, OAB, PowerShell), redirects.
	HTTPS https.Config `yaml:"https"`
}

// HTTPRedirect configures the port-80 listener.
type HTTPRedirect struct {
	// Listen lists "address:port" to bind; empty means no port-80 listener.
	Listen StringList `yaml:"listen"`
	// Certificates names the certificate set whose ACME HTTP-01 challenges
	// it answers; "" means the default set.
	Certificates string `yaml:"certificates"`
	// HTTPSPort is the port its redirects name; 0 means 443.
	HTTPSPort int `yaml:"https_port"`
}

// Health is a listener's active health check of its back-ends.
type Health struct {
	// Probe is tcp, tls, smtp, pop3, imap, http or https; "" means tcp.
	Probe string `yaml:"probe"`
	// Interval between probes; 0 means 5s.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one probe; 0 means 3s.
	Timeout time.Duration `yaml:"timeout"`
	// Rise is how many passes in a row bring a back-end up; 0 means 2.
	Rise int `yaml:"rise"`
	// Fall is how many failures in a row take it down; 0 means 3.
	Fall int `yaml:"fall"`
	// Port probes this port instead of the listener's back-end port; 0
	// means the same port.
	Port int `yaml:"port"`
	// StartTLS upgrades smtp, pop3 and imap probes with STARTTLS/STLS.
	StartTLS bool `yaml:"starttls"`
	// HELO is the name the smtp probe sends in EHLO; "" means
	// "localhost".
	HELO string `yaml:"helo"`
	// Path is what http/https probes GET; "" means "/".
	Path string `yaml:"path"`
	// Host is the Host header of http/https probes; "" means the address.
	Host string `yaml:"host"`
	// ExpectStatus is the status http/https probes want; 0 means 200.
	ExpectStatus int `yaml:"expect_status"`
	// ExpectBody, if set, must appear in the http/https response body.
	ExpectBody string `yaml:"expect_body"`
}

// Timeouts of a listener.
type Timeouts struct {
	// Connect bounds each dial to a back-end; 0 means 3s.
	Connect time.Duration `yaml:"connect"`
	// Idle ends a session with no byte either way for this long; 0 means
	// 1h (long enough for ActiveSync's 59-minute heartbeat).
	Idle time.Duration `yaml:"idle"`
}

// Limits of a listener.
type Limits struct {
	// MaxConnections caps simultaneous connections per listen address;
	// more wait in the kernel's backlog. 0 means no cap.
	MaxConnections int `yaml:"max_connections"`
	// MaxPerIP caps simultaneous connections from one client address; the
	// next is refused. 0 means 50 for smtp listeners (Postfix's
	// smtpd_client_connection_count_limit), 100 for pop3 and imap, and no
	// cap for tcp and https (a company's NAT carries thousands of
	// ActiveSync and Outlook connections from one address).
	MaxPerIP int `yaml:"max_per_ip"`
}

// ProxyProtocol configures PROXY protocol headers.
type ProxyProtocol struct {
	// Send is v1 or v2 to send a header with the client's address to each
	// back-end (health probes send one too); "" or none sends none.
	Send ProxyVersion `yaml:"send"`
	// Trusted lists the address ranges of upstream load balancers that
	// must send a header; everyone else must not. Empty trusts nobody.
	Trusted []Prefix `yaml:"trusted"`
}

// StringList is a YAML value that may be written as one string or a list.
type StringList []string
