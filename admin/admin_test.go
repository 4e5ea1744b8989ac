package admin

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// fakeServer is the running gatehouse as the admin package sees it: it
// records operator actions and reloads so that a test can tell whether a
// refused request reached it.
type fakeServer struct {
	mu        sync.Mutex
	listeners []ListenerStatus
	certs     map[string][]CertCheck
	pending   map[string]PendingSet
	actions   []string // "name action"
	reloads   int
}

func (f *fakeServer) Listeners() []ListenerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ListenerStatus(nil), f.listeners...)
}

func (f *fakeServer) Certificates() map[string][]CertCheck { return f.certs }

func (f *fakeServer) Changes() []Change { return nil }

func (f *fakeServer) CertificateSets() map[string]PendingSet {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending
}

func (f *fakeServer) SetBackendState(name string, a Action) (int, error) {
	if name != "a" {
		return 0, errors.New("no back-end named " + name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.actions = append(f.actions, name+" "+string(a))
	return 1, nil
}

func (f *fakeServer) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads++
	return nil
}

// done returns the operator actions and reloads that reached the server.
func (f *fakeServer) done() (actions []string, reloads int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.actions...), f.reloads
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// serve starts an admin listener on listen for srv and returns its
// address; it is closed when the test ends.
func serve(t *testing.T, listen string, opt Options, srv Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	if opt.Log == nil {
		opt.Log = quietLog()
	}
	a := New(ln, opt, srv)
	a.Start()
	t.Cleanup(func() { a.Close() })
	return a.Addr().String()
}

// call sends one request to the admin listener at addr and returns its
// status; set edits the request first (Host, headers).
func call(t *testing.T, method, addr, path string, set func(*http.Request)) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(req)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func withHost(h string) func(*http.Request) { return func(r *http.Request) { r.Host = h } }

func withHeader(k, v string) func(*http.Request) { return func(r *http.Request) { r.Header.Set(k, v) } }

func TestHostMustBeTheListenersOwn(t *testing.T) {
	addr := serve(t, "127.0.0.1:0", Options{Names: []string{"Gatehouse.Example.ORG"}}, &fakeServer{})
	_, port, _ := net.SplitHostPort(addr)
	for host, want := range map[string]int{
		"127.0.0.1:" + port:             200,
		"127.0.0.1":                     200, // a browser omits port 80
		"localhost:" + port:             200,
		"LOCALHOST:" + port:             200,
		"gatehouse.example.org:" + port: 200,
		"gatehouse.example.org.":        200,
		"evil.example:9900":             421, // DNS rebinding
		"evil.example":                  421,
		"127.0.0.2:" + port:             421, // not the listener's address
		"[::1]:" + port:                 421,
		"localhost.evil.example":        421,
	} {
		resp, _ := call(t, "GET", addr, "/api/status", withHost(host))
		if resp.StatusCode != want {
			t.Errorf("Host %q: %s, want %d", host, resp.Status, want)
		}
	}
}

// HTTP/1.0 allows a request without Host: it is refused too.
func TestHostMissingIsRefused(t *testing.T) {
	addr := serve(t, "127.0.0.1:0", Options{}, &fakeServer{})
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /api/status HTTP/1.0\r\n\r\n")
	head, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(head), "HTTP/1.0 421") {
		t.Errorf("no Host: %.40q, want 421", head)
	}
}

// On a wildcard address any address of this host is the listener's.
func TestHostOnWildcardListenerIsAnyLocalAddress(t *testing.T) {
	addr := serve(t, "0.0.0.0:0", Options{}, &fakeServer{})
	_, port, _ := net.SplitHostPort(addr)
	local := "127.0.0.1:" + port
	for host, want := range map[string]int{
		local:                  200,
		"192.0.2.7:" + port:    421, // TEST-NET-1: no interface here has it
		"evil.example:" + port: 421,
	} {
		resp, _ := call(t, "GET", local, "/healthz", withHost(host))
		if resp.StatusCode != want {
			t.Errorf("Host %q: %s, want %d", host, resp.Status, want)
		}
	}
}

func TestStateChangesFromOtherOriginsAreRefused(t *testing.T) {
	srv := &fakeServer{}
	addr := serve(t, "127.0.0.1:0", Options{}, srv)
	for _, tt := range []struct {
		name string
		set  func(*http.Request)
		want int
	}{
		{"foreign Origin", withHeader("Origin", "http://evil.example"), 403},
		{"opaque Origin", withHeader("Origin", "null"), 403},
		{"another port of this host", withHeader("Origin", "http://127.0.0.1:1"), 403},
		{"cross-site fetch", withHeader("Sec-Fetch-Site", "cross-site"), 403},
		{"same-site fetch", withHeader("Sec-Fetch-Site", "same-site"), 403},
		{"form post from a page", func(r *http.Request) {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Origin", "http://evil.example")
			r.Header.Set("Sec-Fetch-Site", "cross-site")
		}, 403},
	} {
		resp, _ := call(t, "POST", addr, "/api/backends/a/disable", tt.set)
		if resp.StatusCode != tt.want {
			t.Errorf("%s: %s, want %d", tt.name, resp.Status, tt.want)
		}
		resp, _ = call(t, "POST", addr, "/api/reload", tt.set)
		if resp.StatusCode != tt.want {
			t.Errorf("%s, reload: %s, want %d", tt.name, resp.Status, tt.want)
		}
	}
	if actions, reloads := srv.done(); len(actions) != 0 || reloads != 0 {
		t.Fatalf("refused requests reached the server: %v, %d reloads", actions, reloads)
	}
	// The admin's own pages, and tools that send neither header, may.
	for name, set := range map[string]func(*http.Request){
		"own Origin":       withHeader("Origin", "http://"+addr),
		"same-origin":      withHeader("Sec-Fetch-Site", "same-origin"),
		"typed by a user":  withHeader("Sec-Fetch-Site", "none"),
		"no header (curl)": nil,
	} {
		if resp, body := call(t, "POST", addr, "/api/backends/a/drain", set); resp.StatusCode != 200 {
			t.Errorf("%s: %s %s, want 200", name, resp.Status, body)
		}
	}
	// A cross-site read is not a state change: the browser's same-origin
	// policy keeps its answer from the page.
	if resp, _ := call(t, "GET", addr, "/api/status", withHeader("Sec-Fetch-Site", "cross-site")); resp.StatusCode != 200 {
		t.Errorf("cross-site GET: %s", resp.Status)
	}
}

func TestTokenGuardsEverythingButHealthz(t *testing.T) {
	const token = "s3cret-token-0123456789"
	addr := serve(t, "127.0.0.1:0", Options{Token: token, Pprof: true}, &fakeServer{})
	bearer := withHeader("Authorization", "Bearer "+token)
	basic := func(user, pass string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(user, pass) }
	}
	for _, path := range []string{"/", "/metrics", "/api/status", "/debug/pprof/", "/debug/pprof/cmdline"} {
		resp, _ := call(t, "GET", addr, path, nil)
		if resp.StatusCode != 401 {
			t.Errorf("GET %s without the token: %s, want 401", path, resp.Status)
		}
		for name, set := range map[string]func(*http.Request){
			"wrong bearer":   withHeader("Authorization", "Bearer "+token+"x"),
			"wrong password": basic("admin", token[:len(token)-1]),
			"token as user":  basic(token, ""),
		} {
			if resp, _ := call(t, "GET", addr, path, set); resp.StatusCode != 401 {
				t.Errorf("GET %s, %s: %s, want 401", path, name, resp.Status)
			}
		}
		for name, set := range map[string]func(*http.Request){"bearer": bearer, "basic": basic("anyone", token), "basic, no user": basic("", token)} {
			if resp, _ := call(t, "GET", addr, path, set); resp.StatusCode != 200 {
				t.Errorf("GET %s with the token (%s): %s, want 200", path, name, resp.Status)
			}
		}
	}
	resp, _ := call(t, "GET", addr, "/", nil)
	if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="gatehouse"` {
		t.Errorf("401 for / challenges %q: a browser would not ask for the password", got)
	}
	if resp, body := call(t, "GET", addr, "/healthz", nil); resp.StatusCode != 200 || body != "ok\n" {
		t.Errorf("/healthz without the token: %s %q", resp.Status, body)
	}
	if resp, _ := call(t, "POST", addr, "/api/backends/a/drain", nil); resp.StatusCode != 401 {
		t.Errorf("drain without the token: %s", resp.Status)
	}
}

// A kept-alive connection that sends nothing more is closed after
// idleTimeout, token or not: otherwise anyone reaching the port could
// hold descriptors forever with one /healthz (or one 401) each.
func TestIdleConnectionsAreClosed(t *testing.T) {
	old := idleTimeout
	idleTimeout = 300 * time.Millisecond
	t.Cleanup(func() { idleTimeout = old })
	addr := serve(t, "127.0.0.1:0", Options{Token: "0123456789abcdef"}, &fakeServer{})
	for _, path := range []string{"/healthz", "/api/status"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.Close {
			t.Fatalf("%s: the server closed at once; want a kept-alive connection to test", path)
		}
		// The connection must end well before the 20 s deadline.
		if n, err := io.Copy(io.Discard, c); err != nil || n != 0 {
			t.Errorf("%s: idle connection not closed by the server: %d bytes, %v", path, n, err)
		}
	}
}

func TestPprofOnlyWhenAsked(t *testing.T) {
	off := serve(t, "127.0.0.1:0", Options{}, &fakeServer{})
	on := serve(t, "127.0.0.1:0", Options{Pprof: true}, &fakeServer{})
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
		if resp, _ := call(t, "GET", off, path, nil); resp.StatusCode != 404 {
			t.Errorf("pprof off: GET %s = %s, want 404", path, resp.Status)
		}
		if resp, _ := call(t, "GET", on, path, nil); resp.StatusCode != 200 {
			t.Errorf("pprof on: GET %s = %s, want 200", path, resp.Status)
		}
	}
}

func TestAPIActionsAndReload(t *testing.T) {
	srv := &fakeServer{}
	addr := serve(t, "127.0.0.1:0", Options{}, srv)
	for path, want := range map[string]int{
		"/api/backends/a/drain":      200,
		"/api/backends/a/enable":     200,
		"/api/backends/a/disable":    200,
		"/api/backends/a/explode":    404,
		"/api/backends/nosuch/drain": 404,
		"/api/reload":                200,
	} {
		if resp, body := call(t, "POST", addr, path, nil); resp.StatusCode != want {
			t.Errorf("POST %s: %s %s, want %d", path, resp.Status, body, want)
		}
	}
	actions, reloads := srv.done()
	if fmt.Sprint(len(actions), reloads) != "3 1" {
		t.Errorf("server saw %v and %d reloads", actions, reloads)
	}
}

// samplerRunning reports whether a rate sampler goroutine exists.
func samplerRunning() bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "(*rateSampler).run")
}

func TestCloseEndsEveryGoroutine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := New(ln, Options{Log: quietLog()}, &fakeServer{})
	a.Start()
	call(t, "GET", a.Addr().String(), "/", nil) // wakes the sampler
	if !samplerRunning() {
		t.Fatal("no sampler while the listener serves")
	}
	a.Close()
	if samplerRunning() {
		t.Error("the sampler outlived Close")
	}
	if _, err := net.DialTimeout("tcp", a.Addr().String(), time.Second); err == nil {
		t.Error("the socket is still open after Close")
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	deadline := time.Now().Add(5 * time.Second)
	for samplerRunning() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if code == 0 && samplerRunning() {
		fmt.Fprintln(os.Stderr, "a rate sampler outlived its test")
		code = 1
	}
	os.Exit(code)
}

// A page that fires refused requests in a loop costs a few log lines per
// minute, and the next line says how many were left out.
func TestRefusalsAreLoggedRateLimited(t *testing.T) {
	logs := &wiretest.Logs{}
	addr := serve(t, "127.0.0.1:0", Options{Log: slog.New(slog.NewTextHandler(logs, nil))}, &fakeServer{})
	const n = refusalBurst + 15
	for range n {
		if resp, _ := call(t, "GET", addr, "/api/status", withHost("evil.example")); resp.StatusCode != 421 {
			t.Fatalf("foreign Host: %s", resp.Status)
		}
	}
	if got := len(logs.Lines("foreign Host")); got != refusalBurst {
		t.Errorf("%d refusals logged %d lines, want %d", n, got, refusalBurst)
	}
	// Another reason has lines of its own.
	call(t, "POST", addr, "/api/reload", withHeader("Origin", "http://evil.example"))
	if got := len(logs.Lines("cross-origin")); got != 1 {
		t.Errorf("cross-origin refusal logged %d lines, want 1", got)
	}
	if !strings.Contains(logs.String(), "from=127.0.0.1:") {
		t.Errorf("refusals are logged without the client's address:\n%s", logs)
	}
}

func TestRefusalLogReportsWhatItLeftOut(t *testing.T) {
	logs := &wiretest.Logs{}
	l := newRefusalLog(slog.New(slog.NewTextHandler(logs, nil)))
	l.burst, l.window = 2, 50*time.Millisecond
	for range 5 {
		l.warn("host", "refused")
	}
	if got := len(logs.Lines("refused")); got != 2 {
		t.Fatalf("%d lines for a burst of 2", got)
	}
	time.Sleep(60 * time.Millisecond) // a new window
	l.warn("host", "refused")
	if !strings.Contains(logs.String(), "suppressed=3") {
		t.Errorf("the first line of the next window does not count the 3 left out:\n%s", logs)
	}
}

// GET /api/status puts each listener's certificate comparisons under it.
func TestStatusJSONCarriesCertificates(t *testing.T) {
	srv := &fakeServer{
		listeners: []ListenerStatus{{Name: "mail", Backends: []BackendStatus{}}, {Name: "web", Backends: []BackendStatus{}}},
		certs:     map[string][]CertCheck{"web": {{Backend: "ex1", Match: false, Problem: "another certificate"}}},
	}
	addr := serve(t, "127.0.0.1:0", Options{}, srv)
	resp, body := call(t, "GET", addr, "/api/status", nil)
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/status: %s %v %q", resp.Status, err, body)
	}
	if len(st.Listeners) != 2 || len(st.Listeners[0].Certificates) != 0 || len(st.Listeners[1].Certificates) != 1 ||
		st.Listeners[1].Certificates[0].Problem != "another certificate" {
		t.Errorf("status: %+v", st.Listeners)
	}
	if strings.Contains(body, `"certificates"`) && strings.Count(body, `"certificates"`) != 1 {
		t.Errorf("a listener without comparisons shows a certificates key:\n%s", body)
	}
}

// A certificate set still waiting for its certificate (its ACME CA was
// unreachable at start) shows in the API and on the page, with its last
// error, so an operator sees why clients get a temporary certificate.
func TestPendingCertificateSetsShown(t *testing.T) {
	srv := &fakeServer{
		listeners: []ListenerStatus{{Name: "mail", Backends: []BackendStatus{}}},
		pending: map[string]PendingSet{"default": {Names: []string{"mail.example.com"}, Attempts: 3,
			Since: time.Now().Add(-time.Minute), NextTry: time.Now().Add(time.Minute), LastError: "dial tcp: connection refused"}},
	}
	addr := serve(t, "127.0.0.1:0", Options{}, srv)
	_, body := call(t, "GET", addr, "/api/status", nil)
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Pending["default"].Attempts != 3 {
		t.Fatalf("GET /api/status: %v %q", err, body)
	}
	_, page := call(t, "GET", addr, "/", nil)
	for _, want := range []string{"Certificates pending", "mail.example.com", "temporary certificate", "connection refused"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	srv.mu.Lock()
	srv.pending = nil
	srv.mu.Unlock()
	if _, page := call(t, "GET", addr, "/", nil); strings.Contains(page, "Certificates pending") {
		t.Error("the page shows a pending section with nothing pending")
	}
}
