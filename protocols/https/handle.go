package https

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// maxUpstreams bounds the back-end connections one session keeps alive
// (one per back-end it talked to); the least recently used goes first.
const maxUpstreams = 4

// errPinnedGone is the end of a session whose pinned back-end connection
// closed: its login went with it.
var errPinnedGone = errors.New("pinned back-end connection closed")

// outcome is what became of one request.
type outcome struct {
	status  int
	up      int64 // bytes to the back-end, head included
	down    int64 // bytes to the client, head included
	keep    bool  // the client connection takes another request
	backend string
	partial bool   // the request body did not reach the back-end whole
	reason  string // error class for metrics, "" when fine
	err     error
}

// handle serves one request whose head has been read, and reports
// whether the connection takes another.
func (s *session) handle() bool {
	start := time.Now()
	r := &s.req
	r.reset()
	if err := r.parse(); err != nil {
		var he *httpError
		errors.As(err, &he)
		s.answer(r, he.status, he.reason, he.err.Error(), true)
		s.record(r, outcome{status: he.status, reason: "bad_request", err: err}, start)
		return false
	}
	r.service = classifyPath(r.canon)
	if s.serveACME(r) {
		return !r.close
	}
	if s.forbidden(r) {
		keep := !r.close && r.kind == bodyNone
		s.answer(r, 403, "Forbidden", "this service is not available from your address", !keep)
		s.record(r, outcome{status: 403, keep: keep, reason: "forbidden"}, start)
		return keep
	}
	if s.redirect(r) {
		return !r.close && r.kind == bodyNone
	}
	s.clk.setIdle(s.f.idle(r.service))
	if s.throttled(r) {
		s.record(r, outcome{status: 429, reason: "throttled"}, start)
		return false
	}
	x := s.forward(r)
	if r.creds.user != "" && x.status < 400 {
		s.user = r.creds.user // the login a pinned connection carries on
	}
	s.record(r, x, start)
	s.releaseWriter()
	s.releaseReader()
	return x.keep && !s.f.draining.Load()
}

// forward routes the request and relays it and its response.
func (s *session) forward(r *request) outcome {
	u, err := s.upstreamFor(r)
	if err != nil {
		return s.noUpstream(r, err)
	}
	if s.f.Config.service(r.service).Affinity == AffinityCookie && r.cookieBackend != u.b.Name {
		r.setCookie = s.f.cookieFor(r.service, u.b.Name)
	}
	if r.rts != nil {
		s.countPair(s.f.channels.attach(*r.rts, u.b.Name))
		defer s.f.channels.detach(*r.rts)
	}
	if r.longPoll() {
		g := longPolls.WithLabelValues(s.f.name(), r.service)
		g.Inc()
		defer g.Dec()
	}
	x := s.exchange(u, r)
	x.backend = u.b.Name
	return x
}

// noUpstream answers a request no back-end could take.
func (s *session) noUpstream(r *request, err error) outcome {
	keep := !r.close && r.kind == bodyNone // an unread body ends the connection
	if errors.Is(err, errPinnedGone) {
		// Answering would hide that the login is gone; closing makes the
		// client open a new connection and authenticate again.
		return outcome{status: 502, reason: "backend_failed", err: err}
	}
	s.answer(r, 503, "Service Unavailable", "no back-end is available for this service", !keep)
	return outcome{status: 503, keep: keep, reason: "no_backend", err: err}
}

// upstreamFor returns the back-end connection for the request: the
// pinned one, a kept-alive one to the routed back-end, or a new one.
func (s *session) upstreamFor(r *request) (*upstream, error) {
	if u := s.pinned; u != nil {
		if u.usable() {
			return u, nil
		}
		return nil, errPinnedGone
	}
	pool := s.f.pool(r.service)
	s.readRTS(r)
	rt := s.routeFor(r)
	r.cookieBackend = rt.prefer
	if rt.prefer == "" && rt.key == "" {
		if u := s.reusable(pool); u != nil {
			return u, nil
		}
	}
	ord := order(pool, rt)
	if len(ord) == 0 {
		return nil, fmt.Errorf("%s: %w", pool.Name, proxy.ErrNoBackend)
	}
	if u := s.kept(ord[0].Name); u != nil {
		return u, nil
	}
	u, err := s.dial(pool, ord, r.get("Host"))
	if err != nil {
		return nil, err
	}
	s.keepUpstream(u)
	return u, nil
}

// reusable returns a kept-alive connection to any back-end the pool may
// use now, the most recent first: without affinity, a keep-alive client
// stays where it is (no dial per request).
func (s *session) reusable(pool *proxy.Pool) *upstream {
	for i := len(s.ups) - 1; i >= 0; i-- {
		u := s.ups[i]
		for _, b := range pool.Backends {
			if b.Name == u.b.Name && b.Usable() {
				return s.kept(u.b.Name)
			}
		}
	}
	return nil
}

// kept returns the session's live connection to the named back-end,
// dropping dead ones on the way.
func (s *session) kept(name string) *upstream {
	for i, u := range s.ups {
		if u.b.Name != name {
			continue
		}
		if !u.usable() {
			u.close()
			s.ups = append(s.ups[:i], s.ups[i+1:]...)
			return nil
		}
		s.ups = append(append(s.ups[:i], s.ups[i+1:]...), u) // most recent last
		return u
	}
	return nil
}

func (s *session) keepUpstream(u *upstream) {
	if len(s.ups) >= maxUpstreams {
		s.ups[0].close()
		s.ups = s.ups[1:]
	}
	s.ups = append(s.ups, u)
}

// drop forgets a back-end connection that can take no more requests.
func (s *session) drop(u *upstream) {
	u.close()
	for i, o := range s.ups {
		if o == u {
			s.ups = append(s.ups[:i], s.ups[i+1:]...)
			break
		}
	}
}

// pin makes u the session's one back-end connection for good.
func (s *session) pin(u *upstream) {
	if u.pinned {
		return
	}
	u.pinned = true
	s.pinned = u
	pinnedTotal.WithLabelValues(s.f.name()).Inc()
	pinnedActive.WithLabelValues(s.f.name()).Inc()
	for _, o := range s.ups {
		if o != u {
			o.close()
		}
	}
	s.ups = append(s.ups[:0], u)
}

// readRTS reads the first PDU of an RPC channel before routing, when the
// channel is not authenticated by its connection (Basic or anonymous), so
// that the virtual connection cookie can route it. A client that asked
// for 100-continue gets it from gatehouse first: it sends no body before.
func (s *session) readRTS(r *request) {
	if s.f.Config.service(r.service).Affinity != AffinityRPCChannel || !isRPCMethod(r.method) ||
		r.kind != bodyFixed || r.length < minPDUBody || r.creds.connAuth {
		return
	}
	if r.expect && r.minor >= 1 {
		if _, err := s.wr().WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil || s.wr().Flush() != nil {
			return
		}
		r.answered100 = true
	}
	s.clk.setHard(time.Now().Add(s.f.Config.HeaderTimeout))
	if p, ok := peekRTS(s.rd(), r.method, r.length); ok {
		r.rts = &p
	}
	s.clk.setHard(time.Time{})
}

func (s *session) countPair(result string) {
	if result != "" {
		rpcPairs.WithLabelValues(s.f.name(), result).Inc()
	}
}

// forbidden reports a request for a service whose allow list does not
// hold the client's address.
func (s *session) forbidden(r *request) bool { return !s.allowed(r.service) }

// allowed reports whether the service's allow list, if any, holds the
// client's address.
func (s *session) allowed(service string) bool {
	allow, ok := s.f.allow[service]
	if !ok {
		return true
	}
	for _, p := range allow {
		if p.Contains(s.ip) {
			return true
		}
	}
	return false
}

// throttled refuses a request whose credentials belong to a client or
// user the shared throttle has blocked.
func (s *session) throttled(r *request) bool {
	t := s.f.Throttle
	if t == nil || !r.creds.final || !t.Blocked(s.ip, r.creds.user) {
		return false
	}
	s.answer(r, 429, "Too Many Requests", "too many failed logins; try again later", true)
	return true
}

// accountLogin tells the throttle how a request with credentials went,
// and waits out the delay of a failure before its 401 is relayed.
func (s *session) accountLogin(r *request, status int) {
	t := s.f.Throttle
	if t == nil || !r.creds.final {
		return
	}
	switch {
	case status == 401:
		wait, _ := t.Failed(s.ip, r.creds.user)
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-s.ctx.Done():
		}
	case status < 400 && r.creds.user != "":
		t.Succeeded(s.ip, r.creds.user)
	}
}

// record writes the access-log line and the metrics of one request.
func (s *session) record(r *request, x outcome, start time.Time) {
	name := s.f.name()
	service := r.service
	if service == "" {
		service = Default
	}
	requestsTotal.WithLabelValues(name, service, methodClass(r.method), codeClass(x.status)).Inc()
	if x.reason != "" {
		requestErrors.WithLabelValues(name, service, x.reason).Inc()
	}
	if !s.log.Enabled(s.ctx, levelFor(x)) {
		return
	}
	attrs := []any{"service", service, "method", string(r.method), "path", string(r.path),
		"status", x.status, "backend", x.backend, "up", x.up, "down", x.down,
		"duration", time.Since(start).Round(time.Millisecond)}
	if user := r.creds.user; user != "" {
		attrs = append(attrs, "user", user)
	} else if s.pinned != nil && s.user != "" {
		attrs = append(attrs, "user", s.user)
	}
	if x.partial {
		attrs = append(attrs, "partial", true)
	}
	if x.err != nil {
		attrs = append(attrs, "err", x.err.Error())
	}
	if x.backend == "" && refusal(x.reason) {
		s.refused("request refused", x.reason, attrs...)
		return
	}
	s.log.Log(s.ctx, levelFor(x), "request", attrs...)
}

// refusal reports the reasons of requests gatehouse refuses itself,
// which a client can repeat at will: their lines are rate-limited.
func refusal(reason string) bool {
	return reason == "bad_request" || reason == "forbidden" || reason == "throttled"
}

// levelFor is the level of a request's log line: warnings for the
// failures an operator must see, info for the rest.
func levelFor(x outcome) slog.Level {
	if x.reason == "no_backend" || x.reason == "backend_failed" {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// answer writes a response of gatehouse's own: a short text body, and
// Connection: close when closing.
func (s *session) answer(r *request, status int, reason, text string, closing bool) {
	if !s.aborted.Load() {
		// A timeout may be why gatehouse answers: give the answer its own
		// time to be written.
		s.clk.setHard(time.Time{})
		s.clk.touch()
	}
	text += "\n"
	s.wr().WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + reason + "\r\n")
	s.wr().WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Length: " + strconv.Itoa(len(text)) + "\r\n")
	if status == 503 || status == 429 {
		s.wr().WriteString("Retry-After: 10\r\n")
	}
	s.connectionHeader(r, !closing, false)
	s.wr().WriteString("\r\n")
	if r == nil || string(r.method) != "HEAD" {
		s.wr().WriteString(text)
	}
	s.wr().Flush()
}

// connectionHeader writes the Connection header the client needs: close
// when closing, keep-alive for an HTTP/1.0 exchange that stays open.
func (s *session) connectionHeader(r *request, keep, old bool) {
	switch {
	case !keep:
		s.wr().WriteString("Connection: close\r\n")
	case r != nil && r.minor == 0, old:
		s.wr().WriteString("Connection: keep-alive\r\n")
	}
}

// httpsHost adds a port other than 443 to the host of a redirect.
func httpsHost(host string, port int) string {
	if port == 0 || port == 443 {
		return host
	}
	if strings.HasPrefix(host, "[") { // an IPv6 literal, brackets kept by hostOnly
		return host + ":" + strconv.Itoa(port)
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// redirect answers the requests gatehouse redirects itself: everything
// on a plain listener that requires TLS, and "/" to RootRedirect.
func (s *session) redirect(r *request) bool {
	var loc string
	toHTTPS := (s.f.TLSRequired || s.f.Config.RedirectHTTPS) && !s.tls
	switch {
	case toHTTPS:
		loc = "https://" + httpsHost(hostOnly(r.get("Host")), s.f.Config.HTTPSPort) + string(r.target)
	case string(r.path) == "/" && s.f.Config.RootRedirect != "off" &&
		(string(r.method) == "GET" || string(r.method) == "HEAD"):
		loc = s.f.Config.RootRedirect
	default:
		return false
	}
	status, reason := 302, "Found"
	if toHTTPS {
		status, reason = 308, "Permanent Redirect"
	}
	closing := r.close || r.kind != bodyNone
	s.wr().WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + reason + "\r\nLocation: " + loc + "\r\nContent-Length: 0\r\n")
	s.connectionHeader(r, !closing, false)
	s.wr().WriteString("\r\n")
	s.wr().Flush()
	s.record(r, outcome{status: status}, time.Now())
	return true
}
