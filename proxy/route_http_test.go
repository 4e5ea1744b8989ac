//go:build linux

package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// authHTTP is a test lookup service in the style of the ones sites run for
// nginx's auth_http: alice/secret lives on mail2, anything else is refused.
type authHTTP struct {
	*httptest.Server
	asked atomic.Int32
	last  atomic.Pointer[http.Header]
}

func startAuthHTTP(t testing.TB) *authHTTP {
	a := &authHTTP{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.asked.Add(1)
		h := r.Header.Clone()
		a.last.Store(&h)
		if r.Header.Get("X-Secret") != "s3" {
			http.Error(w, "no secret", http.StatusForbidden)
			return
		}
		if r.Header.Get("Auth-User") == "alice" && r.Header.Get("Auth-Pass") == "p%20w" {
			w.Header().Set("Auth-Status", "OK")
			w.Header().Set("Auth-Server", "127.0.0.1")
			w.Header().Set("Auth-Port", "2")
			w.Header().Set("Auth-User", "alice%40example.com")
			return
		}
		w.Header().Set("Auth-Status", "Invalid login or password")
		w.Header().Set("Auth-Wait", "3")
	}))
	t.Cleanup(a.Close)
	return a
}

func httpRouterFor(t testing.TB, p *Pool, url string, ttl time.Duration) Router {
	t.Helper()
	r, err := NewRouter(RouteConfig{By: RouteHTTP, URL: url, CacheTTL: ttl,
		Headers: map[string]string{"X-Secret": "s3"}}, p, routeQuiet)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var aliceQuery = RouteQuery{User: "alice", Pass: "p w", Protocol: "pop3", TLS: true,
	Client: netip.MustParseAddrPort("192.0.2.7:51234")}

func TestRouteHTTPSendsNginxHeadersAndUsesTheAnswer(t *testing.T) {
	a := startAuthHTTP(t)
	p := routePool(3)
	r := httpRouterFor(t, p, a.URL, 0)
	res, err := r.Route(context.Background(), aliceQuery)
	if err != nil {
		t.Fatal(err)
	}
	// 127.0.0.1:2 is mail2's address: the pool's back-end, with its health.
	if len(res.Order) != 1 || res.Order[0] != p.Backends[1] || res.User != "alice@example.com" || res.Source != RouteHTTP {
		t.Fatalf("route = %v user %q source %s; want mail2 as alice@example.com by http", routeNames(res.Order), res.User, res.Source)
	}
	h := *a.last.Load()
	for k, want := range map[string]string{"Auth-Method": "plain", "Auth-Protocol": "pop3",
		"Auth-Login-Attempt": "1", "Client-IP": "192.0.2.7", "Auth-SSL": "on"} {
		if got := h.Get(k); got != want {
			t.Errorf("request %s = %q, want %q", k, got, want)
		}
	}
}

func TestRouteHTTPCachesOnlyTheSameCredentials(t *testing.T) {
	a := startAuthHTTP(t)
	r := httpRouterFor(t, routePool(3), a.URL, time.Minute)
	for range 3 {
		if _, err := r.Route(context.Background(), aliceQuery); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.asked.Load(); n != 1 {
		t.Fatalf("3 identical logins asked the lookup %d times, want 1 (cached)", n)
	}
	wrong := aliceQuery
	wrong.Pass = "guess"
	if _, err := r.Route(context.Background(), wrong); err == nil {
		t.Fatal("a wrong password rode on the cached right one")
	}
}

func TestRouteHTTPRefusal(t *testing.T) {
	a := startAuthHTTP(t)
	r := httpRouterFor(t, routePool(3), a.URL, 0)
	q := aliceQuery
	q.Pass = "wrong"
	_, err := r.Route(context.Background(), q)
	var denied *DeniedError
	if !errors.As(err, &denied) || denied.Message != "Invalid login or password" || denied.Wait != 3*time.Second {
		t.Fatalf("err = %v, want the Auth-Status text and a 3s Auth-Wait", err)
	}
}

func TestRouteHTTPLookupDownIsUnavailable(t *testing.T) {
	a := startAuthHTTP(t)
	p := routePool(3)
	cases := map[string]Router{
		"bad secret (403)": must(NewRouter(RouteConfig{By: RouteHTTP, URL: a.URL}, p, routeQuiet)),
		"service down":     httpRouterFor(t, p, "http://"+routeRefusedAddr(t)+"/auth", 0),
	}
	for name, r := range cases {
		res, err := r.Route(context.Background(), aliceQuery)
		if !errors.Is(err, ErrRouteUnavailable) || len(res.Order) != 0 {
			t.Errorf("%s: route = %v, %v; want ErrRouteUnavailable and no back-end", name, routeNames(res.Order), err)
		}
	}
}

func TestRouteHTTPAnsweredBackendDownIsUnavailable(t *testing.T) {
	a := startAuthHTTP(t)
	p := routePool(3)
	p.Backends[1].SetHealthy(false)
	r := httpRouterFor(t, p, a.URL, 0)
	if _, err := r.Route(context.Background(), aliceQuery); !errors.Is(err, ErrRouteUnavailable) {
		t.Fatalf("err = %v, want ErrRouteUnavailable for a down mail2", err)
	}
}

func TestRouteHTTPEscapesLikeNginx(t *testing.T) {
	for in, want := range map[string]string{"a b": "a%20b", "100%": "100%25", "é": "%C3%A9", "x@y": "x@y"} {
		if got := escapeAuth(in); got != want {
			t.Errorf("escapeAuth(%q) = %q, want %q", in, got, want)
		}
		if back := unescapeAuth(escapeAuth(in)); back != in {
			t.Errorf("round trip of %q gave %q", in, back)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Lookups reuse one connection to the service: the answer's body is read
// (up to a bound) before it is closed, for refusals as for answers.
func TestRouteHTTPReusesConnections(t *testing.T) {
	var conns atomic.Int32
	body := strings.Repeat("the lookup service talks a lot\n", 200)
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Auth-Pass") == "p%20w" {
			w.Header().Set("Auth-Status", "OK")
			w.Header().Set("Auth-Server", "127.0.0.1")
			w.Header().Set("Auth-Port", "2")
		} else {
			w.Header().Set("Auth-Status", "Invalid login or password")
		}
		io.WriteString(w, body)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	r := httpRouterFor(t, routePool(3), s.URL, 0)
	wrong := aliceQuery
	wrong.Pass = "guess"
	for i := range 6 {
		q := aliceQuery
		if i%2 == 1 {
			q = wrong
		}
		r.Route(context.Background(), q)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("6 lookups opened %d connections, want 1", n)
	}
}
