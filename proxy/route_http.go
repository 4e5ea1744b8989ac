//go:build linux

package proxy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// httpRouter asks an external service compatible with nginx's auth_http
// protocol where each login goes: the request carries everything in
// headers (Auth-User, Auth-Pass, Auth-Protocol, Client-IP…), the answer's
// Auth-Status is OK with Auth-Server and Auth-Port, or a refusal with an
// optional Auth-Wait. Successful answers are reused for CacheTTL for the
// same user, password and protocol. When the service cannot be asked, the
// route is unavailable: a guess would put the user on the wrong mailbox.
type httpRouter struct {
	cfg    RouteConfig
	pool   *Pool
	log    *slog.Logger
	client *http.Client

	mu    sync.Mutex
	cache map[[32]byte]cachedRoute
	swept time.Time
}

// cachedRoute is a successful lookup kept for reuse.
type cachedRoute struct {
	backend    *Backend
	user, pass string
	expires    time.Time
}

func newHTTPRouter(cfg RouteConfig, pool *Pool, log *slog.Logger) (*httpRouter, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("route: url %q is not an http(s) URL", cfg.URL)
	}
	return &httpRouter{
		cfg:  cfg,
		pool: pool,
		log:  log,
		client: &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
		}},
		cache: make(map[[32]byte]cachedRoute),
	}, nil
}

// Route implements Router.
func (h *httpRouter) Route(ctx context.Context, q RouteQuery) (RouteResult, error) {
	res, err := h.route(ctx, q)
	countRoute(h.pool.Name, RouteHTTP, err)
	return res, err
}

func (h *httpRouter) route(ctx context.Context, q RouteQuery) (RouteResult, error) {
	key := cacheKey(q)
	c, ok := h.cached(key)
	if !ok {
		var err error
		if c, err = h.lookup(ctx, q); err != nil {
			return RouteResult{Source: RouteHTTP}, err
		}
		h.store(key, c)
	}
	res := RouteResult{User: c.user, Pass: c.pass, Source: RouteHTTP}
	if !c.backend.Usable() {
		return res, fmt.Errorf("%w: looked-up back-end %s is down or disabled", ErrRouteUnavailable, c.backend.Name)
	}
	res.Order = []*Backend{c.backend}
	return res, nil
}

// lookup asks the service once.
func (h *httpRouter) lookup(ctx context.Context, q RouteQuery) (cachedRoute, error) {
	req, err := h.request(ctx, q)
	if err != nil {
		return cachedRoute{}, err
	}
	start := time.Now()
	resp, err := h.client.Do(req)
	routeLookup.WithLabelValues(h.pool.Name).Observe(time.Since(start).Seconds())
	if err != nil {
		h.log.Warn("route lookup failed", "listener", h.pool.Name, "err", err)
		return cachedRoute{}, fmt.Errorf("%w: lookup: %w", ErrRouteUnavailable, err)
	}
	drainBody(resp.Body)
	if resp.StatusCode != http.StatusOK {
		h.log.Warn("route lookup failed", "listener", h.pool.Name, "status", resp.Status)
		return cachedRoute{}, fmt.Errorf("%w: lookup answered %s", ErrRouteUnavailable, resp.Status)
	}
	return h.answer(resp.Header)
}

// request builds the auth_http request nginx would send for q.
func (h *httpRouter) request(ctx context.Context, q RouteQuery) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.cfg.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: lookup request: %w", ErrRouteUnavailable, err)
	}
	method, attempt := q.Method, q.Attempt
	if method == "" {
		method = "plain"
	}
	attempt = max(attempt, 1)
	hd := req.Header
	hd.Set("Auth-Method", method)
	hd.Set("Auth-User", escapeAuth(q.User))
	hd.Set("Auth-Pass", escapeAuth(q.Pass))
	hd.Set("Auth-Protocol", q.Protocol)
	hd.Set("Auth-Login-Attempt", strconv.Itoa(attempt))
	hd.Set("Client-IP", q.Client.Addr().Unmap().String())
	if q.TLS {
		hd.Set("Auth-SSL", "on")
	}
	for k, v := range h.cfg.Headers {
		hd.Set(k, v)
	}
	return req, nil
}

// answer reads the Auth-* headers of a lookup's reply.
func (h *httpRouter) answer(hd http.Header) (cachedRoute, error) {
	status := hd.Get("Auth-Status")
	if status != "OK" {
		wait, _ := strconv.Atoi(hd.Get("Auth-Wait"))
		if status == "" {
			status = "login refused"
		}
		return cachedRoute{}, &DeniedError{Message: status, Wait: time.Duration(max(wait, 0)) * time.Second}
	}
	server, port := hd.Get("Auth-Server"), hd.Get("Auth-Port")
	if server == "" || port == "" {
		return cachedRoute{}, fmt.Errorf("%w: lookup answered OK without Auth-Server and Auth-Port", ErrRouteUnavailable)
	}
	addr := net.JoinHostPort(server, port)
	return cachedRoute{
		backend: h.backendAt(addr),
		user:    unescapeAuth(hd.Get("Auth-User")),
		pass:    unescapeAuth(hd.Get("Auth-Pass")),
	}, nil
}

// backendAt returns the pool's back-end at addr, so that its health and
// admin state apply, or a new back-end for an address the pool lacks (the
// lookup may know servers the config does not, as with nginx).
func (h *httpRouter) backendAt(addr string) *Backend {
	for _, b := range h.pool.Backends {
		if b.Addr == addr {
			return b
		}
	}
	return NewBackend(addr, addr, 0)
}

func (h *httpRouter) cached(key [32]byte) (cachedRoute, bool) {
	if h.cfg.CacheTTL < 0 {
		return cachedRoute{}, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.cache[key]
	if !ok || time.Now().After(c.expires) {
		return cachedRoute{}, false
	}
	return c, true
}

// store keeps a successful answer, and drops expired ones at most once a
// TTL so the cache stays as small as the set of recent logins.
func (h *httpRouter) store(key [32]byte, c cachedRoute) {
	if h.cfg.CacheTTL < 0 {
		return
	}
	now := time.Now()
	c.expires = now.Add(h.cfg.CacheTTL)
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.swept) > h.cfg.CacheTTL {
		h.swept = now
		for k, v := range h.cache {
			if now.After(v.expires) {
				delete(h.cache, k)
			}
		}
	}
	h.cache[key] = c
}

// cacheKey hashes what makes an answer reusable, the password included: a
// wrong password must never ride on a cached right one.
func cacheKey(q RouteQuery) [32]byte {
	return sha256.Sum256([]byte(q.Protocol + "\x00" + foldUser(q.User) + "\x00" + q.Pass))
}

// escapeAuth percent-escapes what nginx escapes in Auth-User and
// Auth-Pass: '%', spaces, controls and non-ASCII bytes.
func escapeAuth(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// unescapeAuth undoes escapeAuth; a value that is not valid escaping is
// taken as it is.
func unescapeAuth(s string) string {
	u, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return u
}

// maxDrain bounds what is read of a lookup answer's body, which carries
// nothing gatehouse uses: a body read to its end lets the transport reuse
// the connection; a longer one is cut, and its connection closed.
const maxDrain = 64 << 10

// drainBody reads up to maxDrain of body and closes it.
func drainBody(body io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(body, maxDrain))
	body.Close()
}
