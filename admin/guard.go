package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// guard decides whether a request reaches the admin handlers, in three
// steps, each refused with a log line:
//
//  1. Host (DNS rebinding): an IP address of the listener (any local
//     address when it listens on a wildcard), localhost, or one of
//     Options.Names; else 421 Misdirected Request. A page whose name an
//     attacker points at 127.0.0.1 sends its own name as Host, so it
//     cannot read /api/status.
//  2. Cross-origin writes: http.CrossOriginProtection refuses a POST, PUT,
//     DELETE or PATCH whose Sec-Fetch-Site is cross-site or same-site, or
//     whose Origin is not this listener's, with 403. A request with
//     neither header (curl, scripts) passes: only browsers send them, and
//     every browser that can post a form sends at least Origin.
//  3. Token, when set: everything but /healthz needs it, as a bearer token
//     or as a basic-auth password (any user name), compared in constant
//     time; else 401 with a challenge (Basic outside /api/, so a browser
//     asks for it on the status page, as HAProxy's stats page does).
//
// Refusals are logged with the client's address, rate-limited per reason
// (lograte.go).
type guard struct {
	ip    netip.Addr      // the listener's; unspecified: any local address
	names map[string]bool // lower case, without a trailing dot
	token [sha256.Size]byte
	open  bool // no token
	cop   *http.CrossOriginProtection
	log   *refusalLog
}

func newGuard(addr net.Addr, opt Options) *guard {
	g := &guard{names: map[string]bool{"localhost": true}, open: opt.Token == "", log: newRefusalLog(opt.Log)}
	g.token = sha256.Sum256([]byte(opt.Token))
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		g.ip = ap.Addr().Unmap()
	}
	for _, n := range opt.Names {
		g.names[normalName(n)] = true
	}
	g.cop = http.NewCrossOriginProtection()
	g.cop.SetDenyHandler(http.HandlerFunc(g.denyCrossOrigin))
	return g
}

// wrap puts the three checks in front of next.
func (g *guard) wrap(next http.Handler) http.Handler {
	authorized := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && !g.authorized(r) {
			g.challenge(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
	checked := g.cop.Handler(authorized)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r) {
			g.log.warn("host", "admin: refused a request for a foreign Host (DNS rebinding?)", "host", r.Host, "from", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			writeJSON(w, http.StatusMisdirectedRequest, apiError{"unknown Host: use an address of the admin listener, localhost or a name in admin.names"})
			return
		}
		checked.ServeHTTP(w, r)
	})
}

// normalName lower-cases a host name and drops a trailing dot.
func normalName(n string) string {
	return strings.TrimSuffix(strings.ToLower(n), ".")
}

// hostAllowed checks the request's Host against the listener's addresses
// and names. The port is not compared: a browser omits the default one.
func (g *guard) hostAllowed(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return false
	}
	if g.names[normalName(host)] {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	if !g.ip.IsValid() || !g.ip.IsUnspecified() {
		return ip == g.ip
	}
	return isLocal(r, ip)
}

// isLocal reports whether ip is the address the request came in on, or
// one of this host's interface addresses.
func isLocal(r *http.Request, ip netip.Addr) bool {
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil && ap.Addr().Unmap() == ip {
			return true
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == ip {
			return true
		}
	}
	return false
}

// denyCrossOrigin answers a state-changing request from another origin.
func (g *guard) denyCrossOrigin(w http.ResponseWriter, r *http.Request) {
	g.log.warn("origin", "admin: refused a cross-origin request (a web page tried to drive the API?)",
		"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"),
		"from", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
	writeJSON(w, http.StatusForbidden, apiError{"cross-origin request refused"})
}

// authorized reports whether the request carries the token, as a bearer
// token or a basic-auth password.
func (g *guard) authorized(r *http.Request) bool {
	if g.open {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		_, got, ok = r.BasicAuth()
	}
	sum := sha256.Sum256([]byte(got))
	return ok && subtle.ConstantTimeCompare(sum[:], g.token[:]) == 1
}

// challenge answers a request without the token.
func (g *guard) challenge(w http.ResponseWriter, r *http.Request) {
	g.log.warn("token", "admin: refused: bad or missing token", "from", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
	if strings.HasPrefix(r.URL.Path, "/api/") {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse"`)
		writeJSON(w, http.StatusUnauthorized, apiError{"a valid bearer token is required"})
		return
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="gatehouse"`)
	http.Error(w, "the admin token is required: as a bearer token, or as the password of basic authentication", http.StatusUnauthorized)
}
