package https

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/health"
	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// servicePools builds, for each service, a pool of its own over the same
// servers, with Backend values of its own: health is per back-end and
// service, as the lead's wiring does with checks named
// "<listener>/<service>".
func servicePools(servers []*exchangetest.Server, services ...string) map[string]*proxy.Pool {
	pools := map[string]*proxy.Pool{}
	for _, svc := range services {
		var specs []string
		for _, s := range servers {
			specs = append(specs, s.Name+"="+s.Addr)
		}
		pools[svc] = newPool("web/"+svc, specs...)
	}
	return pools
}

// probeAll runs each service's health check against each back-end once
// and records the verdicts, as the health monitor would.
func probeAll(t *testing.T, cfg *Config, pools map[string]*proxy.Pool) {
	t.Helper()
	for svc, pool := range pools {
		path, status, body := cfg.HealthCheck(svc)
		for _, b := range pool.Backends {
			p := &health.HTTP{Path: path, ExpectStatus: status, ExpectBody: body}
			b.SetHealthy(p.Probe(context.Background(), b.Addr) == nil)
		}
	}
}

// backendsSeen sends n requests for path, each on a new connection, and
// counts the back-ends that answered.
func backendsSeen(t *testing.T, addr, path string, n int, headers ...string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		c, br := dial(t, addr)
		resp, _ := get(t, c, br, path, headers...)
		seen[resp.Header.Get("X-Backend")]++
		c.Close()
	}
	return seen
}

func TestPerServiceHealth(t *testing.T) {
	var servers []*exchangetest.Server
	for _, name := range []string{"cas-a", "cas-b"} {
		s := exchangetest.NewServer(name)
		t.Cleanup(s.Close)
		servers = append(servers, s)
	}
	pools := servicePools(servers, OWA, EWS)
	cfg := Config{}
	f := &Frontend{Pool: pools[OWA], Services: pools, Config: cfg}
	addr := serve(t, f)
	// cas-a's OWA is down (its /owa/healthcheck.htm answers 503) while its
	// EWS is up: OWA goes to cas-b only, EWS still to both.
	servers[0].SetDown("owa", true)
	probeAll(t, &cfg, pools)
	if seen := backendsSeen(t, addr, "/owa/", 10); seen["cas-a"] != 0 || seen["cas-b"] != 10 {
		t.Errorf("OWA went to %v, want cas-b only", seen)
	}
	if seen := backendsSeen(t, addr, "/EWS/Exchange.asmx", 10); seen["cas-a"] == 0 || seen["cas-b"] == 0 {
		t.Errorf("EWS went to %v, want both", seen)
	}
	servers[0].SetDown("owa", false)
	probeAll(t, &cfg, pools)
	if seen := backendsSeen(t, addr, "/owa/", 10); seen["cas-a"] == 0 {
		t.Errorf("OWA went to %v after cas-a's OWA came back", seen)
	}
}

func TestHealthCheckDefaults(t *testing.T) {
	cfg := Config{Services: map[string]Service{
		OAB:     {Health: &Health{Path: "/status", ExpectStatus: 204}},
		Default: {Health: &Health{ExpectBody: "ok"}},
	}}
	for _, tc := range []struct {
		service, path, body string
		status              int
	}{
		{EWS, "/EWS/healthcheck.htm", "200 OK", 200},
		{ActiveSync, "/Microsoft-Server-ActiveSync/healthcheck.htm", "200 OK", 200},
		{OAB, "/status", "", 204},
		{Default, "/owa/healthcheck.htm", "ok", 200},
	} {
		path, status, body := cfg.HealthCheck(tc.service)
		if path != tc.path || status != tc.status || body != tc.body {
			t.Errorf("HealthCheck(%s) = %s %d %q, want %s %d %q", tc.service, path, status, body, tc.path, tc.status, tc.body)
		}
	}
}

// farm starts n plain Exchange-like back-ends.
func farm(t *testing.T, n int) []*exchangetest.Server {
	t.Helper()
	var servers []*exchangetest.Server
	for i := range n {
		s := exchangetest.NewServer(fmt.Sprintf("cas-%c", 'a'+i))
		t.Cleanup(s.Close)
		servers = append(servers, s)
	}
	return servers
}

func specs(servers []*exchangetest.Server) []string {
	var out []string
	for _, s := range servers {
		out = append(out, s.Name+"="+s.Addr)
	}
	return out
}

func TestCookieAffinity(t *testing.T) {
	servers := farm(t, 3)
	pool := newPool("web", specs(servers)...)
	f := &Frontend{Pool: pool, Config: Config{CookieSecret: "s3cret", Services: map[string]Service{OWA: {Affinity: AffinityCookie}}}}
	addr := serve(t, f)
	c, br := dial(t, addr)
	resp, _ := get(t, c, br, "/owa/")
	first := resp.Header.Get("X-Backend")
	sc := resp.Header.Get("Set-Cookie")
	name, rest, _ := strings.Cut(sc, "=")
	value, attrs, _ := strings.Cut(rest, ";")
	if name != "gatehouse_affinity" || !strings.Contains(attrs, "Path=/owa") || !strings.Contains(attrs, "HttpOnly") {
		t.Fatalf("Set-Cookie = %q", sc)
	}
	if strings.Contains(value, "cas-") {
		t.Errorf("cookie %q names the back-end in clear", value)
	}
	// Every later request with the cookie, on new connections, reaches the
	// same back-end, and the cookie is not set again.
	for range 10 {
		c, br := dial(t, addr)
		resp, _ := get(t, c, br, "/owa/", "Cookie: other=1; gatehouse_affinity="+value)
		if got := resp.Header.Get("X-Backend"); got != first || resp.Header.Get("Set-Cookie") != "" {
			t.Fatalf("with the cookie: %s (Set-Cookie %q), want %s", got, resp.Header.Get("Set-Cookie"), first)
		}
		c.Close()
	}
	// A forged cookie is ignored and replaced.
	c2, br2 := dial(t, addr)
	resp, _ = get(t, c2, br2, "/owa/", "Cookie: gatehouse_affinity="+strings.Repeat("A", len(value)))
	if resp.Header.Get("Set-Cookie") == "" {
		t.Error("a forged cookie was accepted")
	}
	// When its back-end goes away, the client moves and gets a new cookie.
	for _, b := range pool.Backends {
		if b.Name == first {
			b.SetHealthy(false)
		}
	}
	c3, br3 := dial(t, addr)
	resp, _ = get(t, c3, br3, "/owa/", "Cookie: gatehouse_affinity="+value)
	if resp.Header.Get("X-Backend") == first || resp.Header.Get("Set-Cookie") == "" {
		t.Errorf("after %s went down: served by %s, Set-Cookie %q", first, resp.Header.Get("X-Backend"), resp.Header.Get("Set-Cookie"))
	}
}

func TestSourceIPAffinity(t *testing.T) {
	servers := farm(t, 3)
	addr := serve(t, &Frontend{Pool: newPool("web", specs(servers)...),
		Config: Config{Services: map[string]Service{EWS: {Affinity: AffinitySourceIP}}}})
	used := map[string]bool{}
	for i := range 12 {
		src := fmt.Sprintf("127.0.0.%d", 20+i)
		seen := map[string]int{}
		for range 3 {
			c, br := dialFrom(t, src, addr)
			resp, _ := get(t, c, br, "/ews/exchange.asmx")
			seen[resp.Header.Get("X-Backend")]++
			c.Close()
		}
		if len(seen) != 1 {
			t.Errorf("client %s reached %v", src, seen)
		}
		for b := range seen {
			used[b] = true
		}
	}
	if len(used) < 2 {
		t.Errorf("12 client addresses all went to %v", used)
	}
}

func TestActiveSyncUserAffinity(t *testing.T) {
	servers := farm(t, 3)
	addr := serve(t, &Frontend{Pool: newPool("web", specs(servers)...),
		Config: Config{Services: map[string]Service{ActiveSync: {Affinity: AffinityActiveSyncUser}}}})
	// The same user and device in the plain and the base64 query forms
	// ([MS-ASHTTP] 2.2.1.1.1.1) land on one back-end.
	b64 := base64.StdEncoding.EncodeToString(append(append([]byte{141, 0, 9, 4, 4}, "dev1"...),
		append([]byte{0, 6}, append([]byte("iPhone"), append([]byte{8, 5}, "alice"...)...)...)...))
	for _, user := range []string{"alice", "bob", "carol", "dave"} {
		plain := backendsSeen(t, addr, "/Microsoft-Server-ActiveSync?Cmd=Sync&User="+user+"&DeviceId=dev1&DeviceType=iPhone", 3)
		if len(plain) != 1 {
			t.Errorf("%s reached %v", user, plain)
		}
		if user != "alice" {
			continue
		}
		encoded := backendsSeen(t, addr, "/Microsoft-Server-ActiveSync?"+b64, 3)
		for b := range plain {
			if encoded[b] != 3 {
				t.Errorf("alice: plain query reached %v, base64 query %v", plain, encoded)
			}
		}
	}
}

func TestDecodeEASQuery(t *testing.T) {
	// The worked example of [MS-ASHTTP] section 4.1: version 14.0, Sync,
	// en-US, device v140Device, no policy key, type SmartPhone.
	q, ok := decodeEASQuery([]byte("jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l"))
	if !ok || q.command != easSync || q.device != "v140Device" || q.user != "" {
		t.Errorf("decoded %+v, %v", q, ok)
	}
	if _, ok := decodeEASQuery([]byte("Cmd=Ping&User=a")); ok {
		t.Error("a plain query decoded as base64")
	}
	if got := easCommand([]byte("User=a&cmd=Ping&DeviceId=d")); got != "Ping" {
		t.Errorf("easCommand = %q", got)
	}
}

func TestMAPIContextAffinity(t *testing.T) {
	servers := farm(t, 3)
	addr := serve(t, &Frontend{Pool: newPool("web", specs(servers)...),
		Config: Config{Services: map[string]Service{MAPI: {Affinity: AffinityMAPIContext}}}})
	used := map[string]bool{}
	for i := range 8 {
		cookie := fmt.Sprintf("Cookie: MapiContext=ctx%d; MapiSequence=%d", i, i)
		seen := backendsSeen(t, addr, "/mapi/emsmdb/?MailboxId=a@example.com", 3, cookie)
		if len(seen) != 1 {
			t.Errorf("context %d reached %v", i, seen)
		}
		for b := range seen {
			used[b] = true
		}
	}
	if len(used) < 2 {
		t.Errorf("8 MAPI contexts all went to %v", used)
	}
}
