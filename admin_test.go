package gatehouse

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/admin"
	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/https"
)

// startLogged is startServer with the log lines (warn and above) kept.
func startLogged(t *testing.T, yaml string) (*Server, *wiretest.Logs) {
	t.Helper()
	cfg := parse(t, yaml)
	logs := &wiretest.Logs{}
	srv, err := NewServer(cfg, NewLogger(config.Log{Level: "warn"}, logs))
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, logs
}

// adminCall sends one request to srv's admin listener; set edits it
// first. It returns the status code and the body.
func adminCall(t *testing.T, srv *Server, method, path string, set func(*http.Request)) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+srv.AdminAddr()+path, nil)
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

func header(k, v string) func(*http.Request) { return func(r *http.Request) { r.Header.Set(k, v) } }

// backendAdmin returns the operator state of a back-end in a listener.
func backendAdmin(t *testing.T, srv *Server, listener, backend string) string {
	t.Helper()
	for _, l := range srv.Status().Listeners {
		for _, b := range l.Backends {
			if l.Name == listener && b.Name == backend {
				return b.Admin
			}
		}
	}
	t.Fatalf("no back-end %s in listener %s", backend, listener)
	return ""
}

// curl runs the curl command line args and returns its standard output.
func curl(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is not installed: apt-get install curl")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", append([]string{"-sS", "--max-time", "10"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	return string(out)
}

const twoEchoes = `
admin: {listen: "127.0.0.1:0"}
log: {level: error}
backends: {a: {address: %q}, b: {address: %q}}
listeners: [{name: echo, listen: "127.0.0.1:0", backends: [a, b]}]
`

// A page in the operator's browser cannot disable a back-end, a rebound
// name cannot read the status, and the README's curl commands still work.
func TestAdminRefusesWebPagesButNotCurl(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	defer a.Close()
	defer b.Close()
	srv, logs := startLogged(t, fmt.Sprintf(twoEchoes, a.Addr(), b.Addr()))
	for name, set := range map[string]func(*http.Request){
		"Origin":         header("Origin", "http://evil.example"),
		"Sec-Fetch-Site": header("Sec-Fetch-Site", "cross-site"),
	} {
		if resp, body := adminCall(t, srv, "POST", "/api/backends/a/disable", set); resp.StatusCode != http.StatusForbidden {
			t.Errorf("cross-site POST (%s): %s %s, want 403", name, resp.Status, body)
		}
	}
	if got := backendAdmin(t, srv, "echo", "a"); got != "enabled" {
		t.Fatalf("after refused cross-site POSTs a is %s", got)
	}
	if n := strings.Count(logs.String(), "refused a cross-origin request"); n != 2 {
		t.Errorf("%d log lines for 2 cross-origin requests:\n%s", n, logs)
	}

	// DNS rebinding: evil.example resolves to 127.0.0.1, the browser sends
	// its own name.
	resp, body := adminCall(t, srv, "GET", "/api/status", func(r *http.Request) { r.Host = "evil.example:9900" })
	if resp.StatusCode != http.StatusMisdirectedRequest || strings.Contains(body, "listeners") {
		t.Errorf("GET /api/status for Host evil.example: %s %q, want 421 and no status", resp.Status, body)
	}
	if !strings.Contains(logs.String(), "foreign Host") {
		t.Errorf("no log line for the foreign Host:\n%s", logs)
	}

	// The README's commands.
	base := "http://" + srv.AdminAddr()
	if out := curl(t, "-X", "POST", base+"/api/backends/a/drain"); !strings.Contains(out, `"draining"`) {
		t.Errorf("curl drain: %q", out)
	}
	var st Status
	if err := json.Unmarshal([]byte(curl(t, base+"/api/status")), &st); err != nil {
		t.Fatalf("curl -s /api/status: %v", err)
	}
	if st.Listeners[0].Backends[0].Admin != "draining" || st.Changes[0].State != "draining" {
		t.Errorf("status after the drain: %+v", st)
	}
	ask(t, srv.Addrs()["echo"][0], "one session, so the listener has a series")
	if out := curl(t, base+"/metrics"); !strings.Contains(out, `gatehouse_sessions_total{listener="echo"}`) {
		t.Errorf("curl /metrics lacks gatehouse_ series")
	}
}

// A form on another page that posts to the admin API, submitted by a real
// browser, changes nothing.
func TestIntegrationAdminFormPostFromAnotherPageFails(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	defer a.Close()
	defer b.Close()
	srv, logs := startLogged(t, fmt.Sprintf(twoEchoes, a.Addr(), b.Addr()))
	target := "http://" + srv.AdminAddr() + "/api/backends/b/disable"
	for _, host := range []string{"127.0.0.1", "localhost"} {
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<!doctype html><form id=f method=post action=%q><input name=x value=1></form><script>document.getElementById("f").submit()</script>`, target)
		}))
		defer evil.Close()
		_, port, _ := net.SplitHostPort(evil.Listener.Addr().String())
		d := startChromium(t, t.TempDir())
		var tgt struct{ TargetID string }
		d.call("Target.createTarget", map[string]any{"url": "http://" + host + ":" + port + "/"}, &tgt)
		var attached struct{ SessionID string }
		d.call("Target.attachToTarget", map[string]any{"targetId": tgt.TargetID, "flatten": true}, &attached)
		d.session = attached.SessionID
		// The form was sent: the browser shows the admin's refusal.
		waitEval(t, d, `String(document.body && document.body.innerText.includes("cross-origin request refused"))`, "true", 15*time.Second)
		if got := backendAdmin(t, srv, "echo", "b"); got != "enabled" {
			t.Fatalf("a form posted from http://%s:%s left b %s", host, port, got)
		}
	}
	if n := strings.Count(logs.String(), "refused a cross-origin request"); n != 2 {
		t.Errorf("%d log lines for 2 form posts:\n%s", n, logs)
	}
}

// With a token, only /healthz answers without it; a browser logs in to the
// status page with basic authentication.
func TestAdminTokenGuardsMetricsPprofAndPage(t *testing.T) {
	a := echoServer(t, "a")
	defer a.Close()
	const token = "token-for-the-admin-0123"
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0", token: %q, pprof: true}
log: {level: error}
backends: {a: {address: %q}}
listeners: [{name: echo, listen: "127.0.0.1:0", backends: [a]}]
`, token, a.Addr()))
	bearer := header("Authorization", "Bearer "+token)
	for _, path := range []string{"/metrics", "/debug/pprof/", "/api/status", "/"} {
		if resp, _ := adminCall(t, srv, "GET", path, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %s, want 401", path, resp.Status)
		}
		if resp, _ := adminCall(t, srv, "GET", path, bearer); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the token: %s, want 200", path, resp.Status)
		}
	}
	if resp, body := adminCall(t, srv, "GET", "/healthz", nil); resp.StatusCode != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz without the token: %s %q", resp.Status, body)
	}
	resp, _ := adminCall(t, srv, "GET", "/", nil)
	if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="gatehouse"` {
		t.Errorf("401 for / challenges with %q", got)
	}
	base := "http://" + srv.AdminAddr()
	if page := curl(t, "-u", "operator:"+token, base+"/"); !strings.Contains(page, `data-listener="echo"`) {
		t.Errorf("the status page with basic auth: %.200q", page)
	}
	if out := curl(t, "-u", "operator:"+token, base+"/debug/pprof/goroutine?debug=1"); !strings.Contains(out, "goroutine profile") {
		t.Errorf("pprof with basic auth: %.200q", out)
	}
}

func TestAdminPprofOffByDefault(t *testing.T) {
	a := echoServer(t, "a")
	defer a.Close()
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
log: {level: error}
backends: {a: {address: %q}}
listeners: [{name: echo, listen: "127.0.0.1:0", backends: [a]}]
`, a.Addr()))
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/profile?seconds=1", "/debug/pprof/goroutine"} {
		if resp, _ := adminCall(t, srv, "GET", path, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
	}
}

// admin.names lets operators reach the admin listener by a name of their
// own; anything but a bare host name there is a configuration error.
func TestAdminNames(t *testing.T) {
	a := echoServer(t, "a")
	defer a.Close()
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0", names: [gatehouse.example.org]}
log: {level: error}
backends: {a: {address: %q}}
listeners: [{name: echo, listen: "127.0.0.1:0", backends: [a]}]
`, a.Addr()))
	_, port, _ := net.SplitHostPort(srv.AdminAddr())
	for host, want := range map[string]int{"gatehouse.example.org:" + port: 200, "other.example.org:" + port: 421, "localhost:" + port: 200} {
		if resp, _ := adminCall(t, srv, "GET", "/api/status", func(r *http.Request) { r.Host = host }); resp.StatusCode != want {
			t.Errorf("Host %s: %s, want %d", host, resp.Status, want)
		}
	}
	_, err := config.Parse("x.yaml", []byte(`
admin: {names: ["https://gatehouse.example.org:9900"]}
backends: {a: {address: "127.0.0.1:1"}}
listeners: [{name: main, listen: 127.0.0.1:0, backends: [a]}]
`))
	if err == nil || !strings.Contains(err.Error(), "admin.names") || !strings.Contains(err.Error(), ":2:") {
		t.Errorf("a URL in admin.names: %v", err)
	}
}

// The status's counters are the listener's, not one generation's: a
// reload keeps them, as Prometheus's are kept.
func TestStatusCountersSurviveReload(t *testing.T) {
	a := echoServer(t, "a")
	defer a.Close()
	yaml := fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
log: {level: error}
backends: {a: {address: %q}}
listeners: [{name: echo, listen: "127.0.0.1:0", backends: [a], limits: {max_per_ip: 1}}]
`, a.Addr())
	srv := startServer(t, yaml)
	sessions := func() (uint64, uint64) {
		l := srv.Status().Listeners[0]
		return l.Sessions, l.Refused
	}
	want := uint64(0)
	for round := range 4 {
		for range 2 {
			waitFor(t, func() bool { return srv.Status().Listeners[0].Active == 0 }) // max_per_ip
			ask(t, srv.Addrs()["echo"][0], "hi")
			want++
		}
		waitFor(t, func() bool { got, _ := sessions(); return got == want })
		if err := srv.Reload(parse(t, yaml)); err != nil {
			t.Fatal(err)
		}
		if got, _ := sessions(); got != want {
			t.Fatalf("after reload %d: %d sessions, want %d", round+1, got, want)
		}
	}
	// A refusal counted before a reload stays counted, too.
	waitFor(t, func() bool { return srv.Status().Listeners[0].Active == 0 })
	held := dialLine(t, srv.Addrs()["echo"][0])
	if got := held.ask("hold"); got != "a hold" {
		t.Fatalf("held session: %q", got)
	}
	drained(t, srv.Addrs()["echo"][0])
	if err := srv.Reload(parse(t, yaml)); err != nil {
		t.Fatal(err)
	}
	if got, refused := sessions(); got != want+1 || refused != 1 {
		t.Errorf("after the last reload: %d sessions, %d refused; want %d and 1", got, refused, want+1)
	}
}

// The https listeners' certificate comparisons reach the status under
// their listener's name, and only there.
func TestAdminViewCertificates(t *testing.T) {
	checked := time.Now()
	s := &Server{listeners: []*listener{
		{cfg: &config.Listener{Name: "mail"}},
		{cfg: &config.Listener{Name: "web"}, certStatus: func() []https.CertCheck {
			return []https.CertCheck{{Backend: "ex1", Addr: "10.0.0.11:443", Services: []string{"owa"}, Edge: "aa", Presented: "bb", Problem: "another certificate", Checked: checked}}
		}},
	}}
	got := adminView{s}.Certificates()
	want := map[string][]admin.CertCheck{"web": {{Backend: "ex1", Addr: "10.0.0.11:443", Services: []string{"owa"}, Edge: "aa", Presented: "bb", Problem: "another certificate", Checked: checked}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Certificates() = %+v, want %+v", got, want)
	}
}
