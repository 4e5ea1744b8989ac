//go:build linux

package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// routePool is a pool of back-ends named mail1…mailN that no test dials.
func routePool(n int) *Pool {
	p := &Pool{Name: "mail"}
	for i := 1; i <= n; i++ {
		name := "mail" + string(rune('0'+i))
		p.Backends = append(p.Backends, NewBackend(name, "127.0.0.1:"+string(rune('0'+i)), 1))
	}
	return p
}

// writeRouteMap writes a map file and gives it a modification time that
// differs from any earlier version's, as a real edit a second later would.
func writeRouteMap(t testing.TB, path, body string, version int) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	mod := time.Unix(1_700_000_000+int64(version), 0)
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

func mapRouterFor(t testing.TB, p *Pool, body string, cfg RouteConfig) (Router, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.map")
	writeRouteMap(t, path, body, 0)
	cfg.By, cfg.File = RouteMap, path
	if cfg.Reload == 0 {
		cfg.Reload = time.Nanosecond
	}
	r, err := NewRouter(cfg, p, routeQuiet)
	if err != nil {
		t.Fatal(err)
	}
	return r, path
}

// routedTo returns the name of the first back-end of the user's route.
func routedTo(t testing.TB, r Router, user string) string {
	t.Helper()
	res, err := r.Route(context.Background(), RouteQuery{User: user, Protocol: "imap"})
	if err != nil {
		t.Fatalf("route %s: %v", user, err)
	}
	return routeNames(res.Order)[0]
}

func TestRouteHashIsStableAndFoldsCase(t *testing.T) {
	p := routePool(3)
	r, err := NewRouter(RouteConfig{}, p, routeQuiet)
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Route(context.Background(), RouteQuery{User: "alice"})
	if err != nil || res.Source != RouteHash || len(res.Order) != 3 {
		t.Fatalf("hash route = %+v, %v; want all 3 back-ends by hash", res, err)
	}
	if got := routedTo(t, r, "ALICE"); got != res.Order[0].Name {
		t.Errorf("ALICE went to %s, alice to %s: one mailbox, two servers", got, res.Order[0].Name)
	}
	// The user's first choice going down moves her to her second choice,
	// the next in her own order, not to an arbitrary server.
	res.Order[0].SetHealthy(false)
	if got := routedTo(t, r, "alice"); got != res.Order[1].Name {
		t.Errorf("with %s down alice went to %s, want %s", res.Order[0].Name, got, res.Order[1].Name)
	}
}

func TestRouteHashWithNothingUsableIsUnavailable(t *testing.T) {
	p := routePool(1)
	p.Backends[0].SetAdmin(Disabled)
	r := &HashRouter{Pool: p}
	if _, err := r.Route(context.Background(), RouteQuery{User: "bob"}); !errors.Is(err, ErrRouteUnavailable) {
		t.Fatalf("err = %v, want ErrRouteUnavailable", err)
	}
}

func TestRouteMapUsersDomainsAndComments(t *testing.T) {
	p := routePool(3)
	r, _ := mapRouterFor(t, p, `# moved mailboxes
alice       mail2
Bob@Example.com mail3   # case does not matter
@example.com mail1
`, RouteConfig{})
	for user, want := range map[string]string{
		"alice":           "mail2",
		"ALICE":           "mail2",
		"bob@example.com": "mail3",
		"eve@EXAMPLE.com": "mail1",
	} {
		if got := routedTo(t, r, user); got != want {
			t.Errorf("%s routed to %s, want %s", user, got, want)
		}
	}
}

func TestRouteMapMovesAMailboxOnEdit(t *testing.T) {
	p := routePool(2)
	r, path := mapRouterFor(t, p, "alice mail1\n", RouteConfig{})
	if got := routedTo(t, r, "alice"); got != "mail1" {
		t.Fatalf("before the move alice went to %s", got)
	}
	writeRouteMap(t, path, "alice mail2\n", 1)
	if got := routedTo(t, r, "alice"); got != "mail2" {
		t.Fatalf("after the move alice went to %s, want mail2", got)
	}
	// A broken edit leaves the last good table in force.
	writeRouteMap(t, path, "alice mail2 extra\n", 2)
	if got := routedTo(t, r, "alice"); got != "mail2" {
		t.Fatalf("after a bad edit alice went to %s, want mail2 still", got)
	}
}

func TestRouteMapChecksTheFileAtMostOncePerReload(t *testing.T) {
	p := routePool(2)
	r, path := mapRouterFor(t, p, "alice mail1\n", RouteConfig{Reload: time.Hour})
	writeRouteMap(t, path, "alice mail2\n", 1)
	if got := routedTo(t, r, "alice"); got != "mail1" {
		t.Fatalf("alice went to %s within the reload interval, want mail1", got)
	}
}

func TestRouteMapDownBackendIsUnavailableNotAnother(t *testing.T) {
	p := routePool(2)
	r, _ := mapRouterFor(t, p, "alice mail1\n", RouteConfig{})
	p.Backends[0].SetHealthy(false)
	res, err := r.Route(context.Background(), RouteQuery{User: "alice"})
	if !errors.Is(err, ErrRouteUnavailable) || len(res.Order) != 0 {
		t.Fatalf("route = %v, %v; want ErrRouteUnavailable and no back-end", routeNames(res.Order), err)
	}
}

func TestRouteMapUnmapped(t *testing.T) {
	p := routePool(2)
	hashed, _ := mapRouterFor(t, p, "alice mail1\n", RouteConfig{})
	res, err := hashed.Route(context.Background(), RouteQuery{User: "carol"})
	if err != nil || res.Source != RouteHash || len(res.Order) != 2 {
		t.Errorf("unmapped with hash: %v, %v; want both back-ends by hash", routeNames(res.Order), err)
	}
	rejecting, _ := mapRouterFor(t, p, "alice mail1\n", RouteConfig{Unmapped: "reject"})
	_, err = rejecting.Route(context.Background(), RouteQuery{User: "carol"})
	var denied *DeniedError
	if !errors.As(err, &denied) {
		t.Errorf("unmapped with reject: %v, want a DeniedError", err)
	}
}

func TestRouteMapRefusesBadFiles(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"alice nosuch\n", `line 1: back-end "nosuch" is not in listener mail`},
		{"\nalice\n", "line 2: want"},
		{"alice mail1\nALICE mail2\n", "line 2: ALICE is mapped twice"},
		{"@ mail1\n", "line 1: empty domain"},
	} {
		path := filepath.Join(t.TempDir(), "users.map")
		writeRouteMap(t, path, tc.body, 0)
		_, err := NewRouter(RouteConfig{By: RouteMap, File: path}, routePool(2), routeQuiet)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("map %q: err = %v, want it to contain %q", tc.body, err, tc.want)
		}
	}
	if _, err := NewRouter(RouteConfig{By: RouteMap, File: "/nonexistent/users.map"}, routePool(1), routeQuiet); err == nil {
		t.Error("a missing map file was accepted")
	}
}

func TestRouteConfigValidate(t *testing.T) {
	for _, c := range []RouteConfig{
		{By: "dns"},
		{By: RouteMap},
		{By: RouteHTTP},
		{Unmapped: "drop"},
		{Reload: -time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v was accepted", c)
		}
	}
	var c RouteConfig
	c.SetDefaults()
	if err := c.Validate(); err != nil || c.By != RouteHash {
		t.Errorf("defaults: %+v, %v", c, err)
	}
}

// routeQuiet is the logger of routers whose log lines a test does not read.
var routeQuiet = slog.New(slog.DiscardHandler)

// routeNames lists back-end names, for messages and comparisons.
func routeNames(bs []*Backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Name
	}
	return out
}

// routeRefusedAddr returns a loopback address where nothing listens any more.
func routeRefusedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
