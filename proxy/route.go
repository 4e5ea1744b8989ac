//go:build linux

package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Routing sources, as the config spells them and the metrics label them.
const (
	RouteHash = "hash"
	RouteMap  = "map"
	RouteHTTP = "http"
)

// Router decides which back-ends may serve a user's session. Frontends
// that learn a login name (POP3, IMAP, SMTP AUTH) ask it once per login.
type Router interface {
	Route(ctx context.Context, q RouteQuery) (RouteResult, error)
}

// RouteQuery is what a frontend knows when it asks for a route.
type RouteQuery struct {
	// User is the login name the client gave.
	User string
	// Pass is the password; only an http lookup sees it (Auth-Pass).
	Pass string
	// Protocol is "pop3", "imap" or "smtp" (Auth-Protocol).
	Protocol string
	// Method is the login mechanism as nginx names it: "plain" for
	// USER/PASS, LOGIN and SASL PLAIN (Auth-Method); "" means "plain".
	Method string
	// Attempt counts login attempts on this connection, from 1
	// (Auth-Login-Attempt); 0 means 1.
	Attempt int
	// Client is the client's address and port.
	Client netip.AddrPort
	// TLS reports whether the client connection is encrypted (Auth-SSL).
	TLS bool
}

// RouteResult is a routing decision.
type RouteResult struct {
	// Order lists the back-ends to try, best first. With hash routing it
	// holds every usable back-end (failover); with map and http routing it
	// holds exactly the one that owns the mailbox.
	Order []*Backend
	// User, if not empty, replaces the login name sent to the back-end
	// (an http lookup's Auth-User).
	User string
	// Pass, if not empty, replaces the password sent to the back-end (an
	// http lookup's Auth-Pass).
	Pass string
	// Source is RouteHash, RouteMap or RouteHTTP.
	Source string
}

// ErrRouteUnavailable means the route cannot be known or used right now:
// the mapped back-end is down, or the lookup service does not answer. The
// frontend answers with a temporary error (-ERR [SYS/TEMP], NO
// [UNAVAILABLE], 454) and never tries another back-end, which would show
// the user someone else's empty mailbox.
var ErrRouteUnavailable = errors.New("route unavailable")

// DeniedError is a lookup's refusal of the login (an http lookup's
// Auth-Status other than OK, or a map that rejects unmapped users). The
// frontend answers it like a wrong password and counts it in the Throttle.
type DeniedError struct {
	// Message is the reason to show the client (Auth-Status).
	Message string
	// Wait, if positive, is how long the client must wait before it may
	// try again on the same connection (Auth-Wait); 0 means the frontend
	// closes the connection after answering.
	Wait time.Duration
}

// Error implements error.
func (e *DeniedError) Error() string { return "login denied by route lookup: " + e.Message }

// RouteConfig is the routing table of a listener whose frontend routes by
// user (YAML key "route").
type RouteConfig struct {
	// By is hash, map or http; "" means hash: rendezvous hashing on the
	// user among the pool's usable back-ends.
	By string `yaml:"by"`
	// File is the map file for by: map, required then. Each line is
	// "user backend" or "@domain backend"; # starts a comment.
	File string `yaml:"file"`
	// Unmapped is what map routing does with a user the file does not
	// list: hash (route by hashing) or reject (refuse the login as a wrong
	// password would be); "" means hash.
	Unmapped string `yaml:"unmapped"`
	// Reload is how often the map file's modification time is checked;
	// 0 means 1s.
	Reload time.Duration `yaml:"reload"`
	// URL is the auth_http-compatible lookup for by: http, required then.
	URL string `yaml:"url"`
	// Headers are sent with every lookup (a shared secret, for example);
	// empty means none.
	Headers map[string]string `yaml:"headers"`
	// Timeout bounds one lookup; 0 means 5s.
	Timeout time.Duration `yaml:"timeout"`
	// CacheTTL is how long a successful lookup is reused for the same
	// user, password and protocol; 0 means 10s, negative disables caching.
	CacheTTL time.Duration `yaml:"cache_ttl"`
}

// SetDefaults fills the zero values documented on each field.
func (c *RouteConfig) SetDefaults() {
	if c.By == "" {
		c.By = RouteHash
	}
	if c.Unmapped == "" {
		c.Unmapped = RouteHash
	}
	if c.Reload == 0 {
		c.Reload = time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = 10 * time.Second
	}
}

// Validate reports the first inconsistent setting.
func (c *RouteConfig) Validate() error {
	switch c.By {
	case "", RouteHash:
	case RouteMap:
		if c.File == "" {
			return errors.New("route: by map needs a file")
		}
	case RouteHTTP:
		if c.URL == "" {
			return errors.New("route: by http needs a url")
		}
	default:
		return fmt.Errorf("route: unknown by %q (want hash, map or http)", c.By)
	}
	if c.Unmapped != "" && c.Unmapped != RouteHash && c.Unmapped != "reject" {
		return fmt.Errorf("route: unknown unmapped %q (want hash or reject)", c.Unmapped)
	}
	if c.Reload < 0 || c.Timeout < 0 {
		return errors.New("route: reload and timeout must not be negative")
	}
	return nil
}

// NewRouter builds the routing table cfg describes over pool's back-ends.
// A map file is read at once: a missing file or a line naming a back-end
// not in pool is an error. log receives reloads and lookup failures; nil
// means slog.Default().
func NewRouter(cfg RouteConfig, pool *Pool, log *slog.Logger) (Router, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	switch cfg.By {
	case RouteMap:
		return newMapRouter(cfg, pool, log)
	case RouteHTTP:
		return newHTTPRouter(cfg, pool, log)
	}
	return &HashRouter{Pool: pool}, nil
}

// HashRouter routes by rendezvous hashing of the user over the pool's
// usable back-ends, whatever the pool's balance policy: every gatehouse
// with the same back-end names sends a user to the same server, and a
// down server moves only its own users (to the next in their order).
type HashRouter struct {
	// Pool holds the back-ends; required.
	Pool *Pool
}

// Route implements Router. User names are case-folded.
func (h *HashRouter) Route(_ context.Context, q RouteQuery) (RouteResult, error) {
	res, err := hashRoute(h.Pool, q.User)
	countRoute(h.Pool.Name, RouteHash, err)
	return res, err
}

func hashRoute(p *Pool, user string) (RouteResult, error) {
	order := (&Rendezvous{}).Order(foldUser(user), p.Usable())
	if len(order) == 0 {
		return RouteResult{Source: RouteHash}, fmt.Errorf("%w: no usable back-end in %s", ErrRouteUnavailable, p.Name)
	}
	return RouteResult{Order: order, Source: RouteHash}, nil
}

// Routing metrics. Label values: listener is the listener (pool) name,
// source is hash, map or http.
var (
	routeDecisions = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_route_decisions_total",
		Help: "Routing decisions by user, by listener, source (hash, map, http) and result (ok, unavailable, denied).",
	}, []string{"listener", "source", "result"})
	routeLookup = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gatehouse_route_lookup_seconds",
		Help:    "Latency of http routing lookups that went to the lookup service (cache misses), by listener.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
	}, []string{"listener"})
	mapReloads = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_route_map_reloads_total",
		Help: "Map file reloads, by listener and result (ok, failed: the previous table stays in force).",
	}, []string{"listener", "result"})
)

// countRoute records one routing decision.
func countRoute(listener, source string, err error) {
	result := "ok"
	var denied *DeniedError
	switch {
	case errors.As(err, &denied):
		result = "denied"
	case err != nil:
		result = "unavailable"
	}
	routeDecisions.WithLabelValues(listener, source, result).Inc()
}
