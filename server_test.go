package gatehouse

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// echoServer answers every line with "<name> <line>", so a client can tell
// which back-end it reached.
func echoServer(t *testing.T, name string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s %s\n", name, sc.Text())
				}
			}()
		}
	}()
	return ln
}

// startServer runs a gatehouse built from yaml and returns it running.
func startServer(t *testing.T, yaml string) *Server {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(cfg, NewLogger(cfg.Log, os.Stderr))
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv
}

// ask sends one line through addr and returns the answer.
func ask(t *testing.T, addr, line string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "%s\n", line)
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading reply through %s: %v", addr, err)
	}
	return strings.TrimSpace(reply)
}

func TestServerRelaysAndReportsStatus(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	defer a.Close()
	defer b.Close()
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
log: {level: error}
backends:
  a: {address: %q}
  b: {address: %q}
listeners:
  - name: echo
    listen: 127.0.0.1:0
    backends: [a, b]
    health: {probe: tcp, interval: 100ms, timeout: 100ms, rise: 1, fall: 1}
`, a.Addr(), b.Addr()))
	addr := srv.Addrs()["echo"][0]

	// Round-robin: two sessions reach both back-ends.
	seen := map[string]bool{}
	for range 4 {
		seen[strings.Fields(ask(t, addr, "hello"))[0]] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("round-robin reached %v, want a and b", seen)
	}

	// b dies: the health check takes it down, every session reaches a.
	b.Close()
	waitFor(t, func() bool { return !backendUp(t, srv, "echo", "b") })
	for range 4 {
		if got := ask(t, addr, "hi"); got != "a hi" {
			t.Fatalf("after b died: %q", got)
		}
	}
}

// backendUp reads GET /api/status and reports whether the back-end's check
// in the listener is up.
func backendUp(t *testing.T, srv *Server, listener, backend string) bool {
	t.Helper()
	return adminBackendUp(t, srv.AdminAddr(), listener, backend)
}

// adminBackendUp is backendUp for the admin listener at addr.
func adminBackendUp(t *testing.T, admin, listener, backend string) bool {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	for _, l := range st.Listeners {
		for _, b := range l.Backends {
			if l.Name == listener && b.Name == backend {
				return len(b.Checks) == 1 && b.Checks[0].Up
			}
		}
	}
	t.Fatalf("no %s/%s in status", listener, backend)
	return false
}

func TestMetricsExposeSessions(t *testing.T) {
	a := echoServer(t, "a")
	defer a.Close()
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
log: {level: error}
backends: {a: {address: %q}}
listeners: [{name: metered, listen: "127.0.0.1:0", backends: [a]}]
`, a.Addr()))
	ask(t, srv.Addrs()["metered"][0], "x")
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + srv.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), `gatehouse_sessions_total{listener="metered"} 1`) &&
			strings.Contains(string(body), `gatehouse_bytes_total{backend="a",direction="down",pool="metered"} 4`)
	})
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A reload resets no limit: the session the older configuration still
// serves counts against the reloaded listener's max_per_ip.
func TestReloadKeepsPerAddressCounts(t *testing.T) {
	a := echoServer(t, "a")
	defer a.Close()
	main := wiretest.FreeAddr(t)
	yaml := fmt.Sprintf(`
admin: {listen: "off"}
log: {level: error}
shutdown_grace: 20s
backends: {a: {address: %q}}
listeners:
  - {name: main, listen: %q, backends: [a], limits: {max_per_ip: 1}}
`, a.Addr(), main)
	srv := startServer(t, yaml)
	held := dialLine(t, main)
	if got := held.ask("one"); got != "a one" {
		t.Fatalf("first session: %q", got)
	}
	if err := srv.Reload(parse(t, yaml)); err != nil {
		t.Fatal(err)
	}
	second := dialLine(t, main)
	second.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := second.c.Read(make([]byte, 64)); !errors.Is(err, io.EOF) {
		t.Errorf("a second session from the same address after the reload read %d bytes, %v; want it refused", n, err)
	}
	if got := held.ask("two"); got != "a two" {
		t.Errorf("the first session after the reload: %q", got)
	}
}

// throttle.realms reach the shared throttle: CORP\alice and
// alice@example.com meet.
func TestThrottleRealmsConfigured(t *testing.T) {
	a := echoServer(t, "a")
	defer a.Close()
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "off"}
log: {level: error}
throttle: {realms: {CORP: example.com}, default_realm: example.com}
backends: {a: {address: %q}}
listeners:
  - {name: main, listen: %q, backends: [a]}
`, a.Addr(), wiretest.FreeAddr(t)))
	ip := netip.MustParseAddr("192.0.2.1")
	for range 5 {
		srv.throttle.Failed(ip, `CORP\alice`)
		srv.throttle.Failed(ip, "alice@example.com")
	}
	if !srv.throttle.Blocked(ip, "alice") {
		t.Error(`ten failures as CORP\alice and alice@example.com did not block alice`)
	}
}

// A Config built in code without health settings is an error, not a panic.
func TestNewServerWithoutHealthSettingsIsAnError(t *testing.T) {
	cfg := &config.Config{Admin: config.Admin{Listen: "off"}, Backends: map[string]config.Backend{"a": {Address: "127.0.0.1:1"}},
		Listeners: []config.Listener{{Name: "l", Protocol: "tcp", Listen: config.StringList{"127.0.0.1:0"}, Backends: []string{"a"}}}}
	srv, err := NewServer(cfg, nil)
	if err == nil {
		srv.Close()
		t.Fatal("NewServer accepted a listener without health settings")
	}
}
