package gatehouse

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"golang.org/x/net/html"
)

// hostileGreeting is the greeting of a back-end whose text is markup, as
// a compromised or misconfigured server may send: the page must show it
// as text.
const hostileGreeting = `554 5.3.2 <script>alert("owned")</script> & <img src=x onerror=alert(1)>`

// hostileSMTP answers every connection with hostileGreeting and hangs up,
// but only once speak is called: health transitions must not race with
// NewServer, which starts the monitor before it records its listeners.
func hostileSMTP(t *testing.T) (ln net.Listener, speak func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			<-ready
			c.SetDeadline(time.Now().Add(2 * time.Second))
			io.WriteString(c, hostileGreeting+"\r\n")
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	var once sync.Once
	return ln, func() { once.Do(func() { close(ready) }) }
}

// getPage fetches the admin listener's "/" with the query q and parses it.
func getPage(t *testing.T, srv *Server, q string) (*http.Response, string, *html.Node) {
	t.Helper()
	return getPageAs(t, srv, q, "")
}

// getPageAs is getPage logged in as a browser does: the admin token as
// the basic-auth password, when token is set.
func getPageAs(t *testing.T, srv *Server, q, token string) (*http.Response, string, *html.Node) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+srv.AdminAddr()+"/"+q, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.SetBasicAuth("operator", token)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("the status page is not HTML: %v", err)
	}
	return resp, string(body), doc
}

// findAll returns the elements for which match is true, in document order.
func findAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	if n.Type == html.ElementNode && match(n) {
		out = append(out, n)
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		out = append(out, findAll(c, match)...)
	}
	return out
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// cells maps "backend/listener" to the cell element of the back-end table.
func cells(doc *html.Node) map[string]*html.Node {
	m := map[string]*html.Node{}
	for _, n := range findAll(doc, func(n *html.Node) bool { return n.Data == "td" && attr(n, "data-state") != "" }) {
		m[attr(n, "data-backend")+"/"+attr(n, "data-listener")] = n
	}
	return m
}

// waitCheck waits until the listener's check of the back-end has probed
// and reached up (or down).
func waitCheck(t *testing.T, srv *Server, listener, backend string, up bool) {
	t.Helper()
	waitFor(t, func() bool {
		for _, l := range srv.Status().Listeners {
			for _, b := range l.Backends {
				if l.Name == listener && b.Name == backend && len(b.Checks) == 1 {
					c := b.Checks[0]
					return !c.LastProbe.IsZero() && c.Up == up
				}
			}
		}
		return false
	})
}

func TestStatusPageShowsBackendsPerListenerAndEscapes(t *testing.T) {
	good := smtptest.NewServer("good")
	defer good.Close()
	evil, speak := hostileSMTP(t)
	defer speak()
	echo := echoServer(t, "a")
	defer echo.Close()
	const token = "page-must-not-show-this-token"
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0", token: %q}
log: {level: error}
backends:
  good: {address: %q}
  evil: {address: %q}
  a: {address: %q}
listeners:
  - name: mail
    listen: 127.0.0.1:0
    backends: [good, evil]
    health: {probe: smtp, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}
  - name: echo
    listen: 127.0.0.1:0
    backends: [a]
    health: {probe: tcp, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}
`, token, good.Addr, evil.Addr(), echo.Addr()))
	speak()
	waitCheck(t, srv, "mail", "good", true)
	waitCheck(t, srv, "mail", "evil", false)
	waitCheck(t, srv, "echo", "a", true)

	if resp, _, _ := getPage(t, srv, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET / without the token = %s, want 401", resp.Status)
	}
	resp, body, doc := getPageAs(t, srv, "?refresh=2", token)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %s %q, want 200 text/html", resp.Status, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q does not forbid scripts", csp)
	}

	// One row per back-end, one column per listener; a back-end outside a
	// listener's pool has an empty cell there.
	want := map[string]string{"good/mail": "up", "evil/mail": "down", "a/echo": "up"}
	got := cells(doc)
	for key, state := range want {
		if c := got[key]; c == nil || attr(c, "data-state") != state {
			t.Errorf("cell %s: got %v, want state %s", key, c, state)
		}
	}
	if len(got) != len(want) {
		t.Errorf("the page has %d back-end cells, want %d", len(got), len(want))
	}
	for _, l := range []string{"mail", "echo"} {
		if len(findAll(doc, func(n *html.Node) bool { return n.Data == "tr" && attr(n, "data-listener") == l })) != 1 {
			t.Errorf("no row for listener %s in the listeners table", l)
		}
	}

	// The hostile greeting is on the page as text, on hover and in the
	// changes; it never became an element.
	if title := attr(got["evil/mail"], "title"); !strings.Contains(title, `<script>alert("owned")</script> & <img`) {
		t.Errorf("evil's cell title %q lacks the greeting it failed with", title)
	}
	if n := findAll(doc, func(n *html.Node) bool { return n.Data == "script" || n.Data == "img" }); len(n) > 0 {
		t.Errorf("the back-end's error became %d element(s) on the page", len(n))
	}
	if !strings.Contains(body, "&lt;script&gt;alert(") {
		t.Error("the escaped greeting is missing from the page")
	}
	if strings.Contains(body, token) {
		t.Error("the page shows the admin token")
	}
	if !strings.Contains(body, `<meta http-equiv="refresh" content="2">`) {
		t.Error("?refresh=2 did not set the refresh interval to 2s")
	}
}

func TestStatusPageShowsOperatorStatesAndChanges(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	defer a.Close()
	defer b.Close()
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
log: {level: error}
backends: {a: {address: %q}, b: {address: %q}}
listeners: [{name: echo, listen: "127.0.0.1:0", backends: [a, b], health: {probe: tcp, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}}]
`, a.Addr(), b.Addr()))
	waitCheck(t, srv, "echo", "a", true)
	waitCheck(t, srv, "echo", "b", true)
	srv.SetBackendState("a", proxy.Draining)
	srv.SetBackendState("b", proxy.Disabled)

	_, _, doc := getPage(t, srv, "")
	got := cells(doc)
	for key, state := range map[string]string{"a/echo": "draining", "b/echo": "disabled"} {
		if c := got[key]; c == nil || attr(c, "data-state") != state {
			t.Errorf("cell %s: got %v, want state %s", key, c, state)
		}
	}
	// The changes table lists the operator's actions, newest first.
	rows := findAll(doc, func(n *html.Node) bool { return n.Data == "table" && attr(n, "id") == "changes" })
	if len(rows) != 1 {
		t.Fatal("no changes table")
	}
	text := textOf(rows[0])
	if i, j := strings.Index(text, "disabled"), strings.Index(text, "draining"); i < 0 || j < i {
		t.Errorf("changes table %q: want b disabled listed before a draining", text)
	}
}

// textOf returns the text of n and its descendants.
func textOf(n *html.Node) string {
	if n.Type == html.TextNode {
		return n.Data
	}
	var b strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		b.WriteString(textOf(c))
	}
	return b.String()
}

// samplerRunning reports whether a rate sampler goroutine exists.
func samplerRunning() bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "(*rateSampler).run")
}

func TestStatusPageSamplerEndsWithClose(t *testing.T) {
	if samplerRunning() {
		t.Fatal("a sampler goroutine outlived an earlier test's server")
	}
	a := echoServer(t, "a")
	defer a.Close()
	cfg := parse(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
log: {level: error}
backends: {a: {address: %q}}
listeners: [{name: echo, listen: "127.0.0.1:0", backends: [a]}]
`, a.Addr()))
	srv, err := NewServer(cfg, NewLogger(cfg.Log, os.Stderr))
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	getPage(t, srv, "") // wakes the sampler
	if !samplerRunning() {
		t.Fatal("no sampler goroutine while the server runs")
	}
	srv.Close()
	if samplerRunning() {
		t.Error("the sampler goroutine outlived Close")
	}
}

// devtools drives a headless Chromium over --remote-debugging-pipe: JSON
// messages ended by a NUL byte, to the browser on its fd 3 and back on
// its fd 4.
type devtools struct {
	t       *testing.T
	w, r    *os.File // our ends of the two pipes
	buf     *bufio.Reader
	id      int
	session string // the page's session, once attached
}

// call sends one command and waits for its reply, skipping events.
func (d *devtools) call(method string, params map[string]any, result any) {
	d.t.Helper()
	if err := d.try(method, params, result); err != nil {
		d.t.Fatalf("devtools %s: %v", method, err)
	}
}

// try is call that returns the browser's refusal of the command (such as
// "Inspected target navigated or closed" while a page loads) instead of
// failing the test; a broken pipe still fails it.
func (d *devtools) try(method string, params map[string]any, result any) error {
	d.t.Helper()
	d.id++
	msg := map[string]any{"id": d.id, "method": method, "params": params}
	if d.session != "" && !strings.HasPrefix(method, "Target.") && !strings.HasPrefix(method, "Browser.") {
		msg["sessionId"] = d.session
	}
	b, err := json.Marshal(msg)
	if err != nil {
		d.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second) // a screenshot on a busy machine is slow
	d.w.SetWriteDeadline(deadline)
	d.r.SetReadDeadline(deadline)
	if _, err := d.w.Write(append(b, 0)); err != nil {
		d.t.Fatalf("devtools %s: %v", method, err)
	}
	for {
		line, err := d.buf.ReadBytes(0)
		if err != nil {
			d.t.Fatalf("devtools %s: %v", method, err)
		}
		var reply struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct{ Message string }
		}
		if err := json.Unmarshal(line[:len(line)-1], &reply); err != nil {
			d.t.Fatalf("devtools %s: %v in %q", method, err, line)
		}
		if reply.ID != d.id {
			continue // an event
		}
		if reply.Error != nil {
			return errors.New(reply.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(reply.Result, result); err != nil {
				d.t.Fatalf("devtools %s: %v", method, err)
			}
		}
		return nil
	}
}

// eval evaluates a JavaScript expression in the page and returns its value.
func (d *devtools) eval(expr string) string {
	d.t.Helper()
	v, err := d.tryEval(expr)
	if err != nil {
		d.t.Fatalf("devtools Runtime.evaluate: %v", err)
	}
	return v
}

// tryEval is eval that returns the browser's refusal, as try does.
func (d *devtools) tryEval(expr string) (string, error) {
	d.t.Helper()
	var r struct {
		Result struct{ Value any } `json:"result"`
	}
	err := d.try("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	return fmt.Sprint(r.Result.Value), err
}

// screenshot saves a PNG of the page.
func (d *devtools) screenshot(path string) {
	d.t.Helper()
	var r struct{ Data []byte } // base64 in JSON
	d.call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r)
	if !bytes.HasPrefix(r.Data, []byte("\x89PNG")) {
		d.t.Fatalf("screenshot is not a PNG (%d bytes)", len(r.Data))
	}
	if err := os.WriteFile(path, r.Data, 0o644); err != nil {
		d.t.Fatal(err)
	}
	d.t.Logf("screenshot: %s", path)
}

// startChromium runs headless Chromium with a fresh profile and returns
// the devtools connection to it; it is closed when the test ends.
func startChromium(t *testing.T, artifacts string) *devtools {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: install the Debian package chromium (apt-get install chromium)")
	}
	toBrowser, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r, fromBrowser, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(artifacts, "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--window-size=1280,900", "--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{toBrowser, fromBrowser} // fds 3 and 4
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toBrowser.Close()
	fromBrowser.Close()
	d := &devtools{t: t, w: w, r: r, buf: bufio.NewReader(r)}
	t.Cleanup(func() { stopChromium(d, cmd, log) })
	return d
}

// stopChromium asks the browser to close, and kills its process group if
// it has not exited within five seconds.
func stopChromium(d *devtools, cmd *exec.Cmd, log *os.File) {
	d.w.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(d.w, `{"id":%d,"method":"Browser.close"}`+"\x00", d.id+1)
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	d.w.Close()
	d.r.Close()
	log.Close()
}

// artifactsDir is $GATEHOUSE_ARTIFACTS when set (CI keeps it), else a
// directory removed after the test.
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("GATEHOUSE_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// waitEval polls a JavaScript expression until it yields want. A page
// that is navigating (a form being submitted) refuses evaluation for a
// moment; that counts as not yet.
func waitEval(t *testing.T, d *devtools, expr, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := d.tryEval(expr)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q (%v) after %v, want %q", expr, got, err, within, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestIntegrationStatusPageChromium(t *testing.T) {
	artifacts := artifactsDir(t)
	a, b := echoServer(t, "a"), echoServer(t, "b")
	defer a.Close()
	defer b.Close()
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
log: {level: error}
backends: {a: {address: %q}, b: {address: %q}}
listeners: [{name: echo, listen: "127.0.0.1:0", backends: [a, b], health: {probe: tcp, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}}]
`, a.Addr(), b.Addr()))
	waitCheck(t, srv, "echo", "b", true)
	ask(t, srv.Addrs()["echo"][0], "hello")

	d := startChromium(t, artifacts)
	var target struct{ TargetID string }
	d.call("Target.createTarget", map[string]any{"url": "http://" + srv.AdminAddr() + "/?refresh=1"}, &target)
	var attached struct{ SessionID string }
	d.call("Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	d.session = attached.SessionID

	const bState = `(document.querySelector('td[data-backend="b"][data-listener="echo"]') || {dataset: {}}).dataset.state`
	waitEval(t, d, bState, "up", 10*time.Second)
	loaded := d.eval("performance.timeOrigin")

	// The operator disables b; the open page shows it at its next refresh.
	resp, err := http.Post("http://"+srv.AdminAddr()+"/api/backends/b/disable", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("disable b: %s", resp.Status)
	}
	waitEval(t, d, bState, "disabled", 5*time.Second)
	if d.eval("performance.timeOrigin") == loaded {
		t.Error("the page changed without reloading: it should be rendered by the server")
	}
	dom := d.eval("document.documentElement.outerHTML")
	if err := os.WriteFile(filepath.Join(artifacts, "status.html"), []byte(dom), 0o644); err != nil {
		t.Fatal(err)
	}
	if changes := d.eval(`document.getElementById("changes").innerText`); !strings.Contains(changes, "disabled") {
		t.Errorf("recent changes lack b's disable:\n%s", changes)
	}
	d.screenshot(filepath.Join(artifacts, "status.png"))

	// On a phone-sized screen nothing makes the page scroll sideways.
	d.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}, nil)
	waitEval(t, d, "document.documentElement.scrollWidth <= window.innerWidth", "true", 5*time.Second)
	d.screenshot(filepath.Join(artifacts, "status-phone.png"))
}
