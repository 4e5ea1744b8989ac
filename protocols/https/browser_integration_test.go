package https

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"golang.org/x/net/websocket"
)

// browser is a headless Chromium driven over the DevTools protocol.
type browser struct {
	ws *websocket.Conn
	id int
}

// startChromium runs headless Chromium for the test and connects to its
// first page.
func startChromium(t *testing.T) *browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is missing: install the Debian package chromium")
	}
	// Chromium's helper processes write to the profile until they are gone:
	// the whole process group is stopped before the profile is removed.
	dir, err := os.MkdirTemp("", "gatehouse-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command(bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--ignore-certificate-errors", "--user-data-dir="+dir, "--remote-debugging-port=0",
		"--remote-allow-origins=*", "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		time.Sleep(100 * time.Millisecond)
	})
	var port string
	eventually(t, 30*time.Second, "Chromium's DevTools port", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "DevToolsActivePort"))
		port, _, _ = strings.Cut(string(b), "\n")
		return err == nil && port != ""
	})
	var pages []struct{ Type, WebSocketDebuggerURL string }
	eventually(t, 10*time.Second, "a page target", func() bool {
		return getJSON("http://127.0.0.1:"+port+"/json/list", &pages) == nil && len(pages) > 0 && pages[0].Type == "page"
	})
	ws, err := websocket.Dial(pages[0].WebSocketDebuggerURL, "", "http://127.0.0.1/")
	if err != nil {
		t.Fatalf("connecting to the page: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return &browser{ws: ws}
}

// getJSON fetches url and decodes its JSON body into v.
func getJSON(url string, v any) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// call sends one DevTools command and waits for its result, skipping
// events.
func (b *browser) call(method string, params map[string]any) (json.RawMessage, error) {
	b.id++
	b.ws.SetDeadline(time.Now().Add(30 * time.Second))
	if err := websocket.JSON.Send(b.ws, map[string]any{"id": b.id, "method": method, "params": params}); err != nil {
		return nil, err
	}
	for {
		var msg struct {
			ID     int
			Result json.RawMessage
			Error  *struct{ Message string }
		}
		if err := websocket.JSON.Receive(b.ws, &msg); err != nil {
			return nil, err
		}
		if msg.ID != b.id {
			continue
		}
		if msg.Error != nil {
			return nil, fmt.Errorf("%s: %s", method, msg.Error.Message)
		}
		return msg.Result, nil
	}
}

// eval runs JavaScript in the page and returns its string value.
func (b *browser) eval(expr string) string {
	res, err := b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	if err != nil {
		return "error: " + err.Error()
	}
	var r struct{ Result struct{ Value any } }
	json.Unmarshal(res, &r)
	return fmt.Sprint(r.Result.Value)
}

// page reports where the browser is: path, signed-in user and back-end.
func (b *browser) page() string {
	return b.eval(`location.pathname + "|" + ((document.getElementById("user") || {}).textContent || "") + "|" +
		((document.getElementById("backend") || {}).textContent || "")`)
}

// waitFor polls the page until pred holds.
func (b *browser) waitFor(t *testing.T, what string, pred func(string) bool) string {
	t.Helper()
	var last string
	eventually(t, 20*time.Second, what+" (last seen "+last+")", func() bool {
		last = b.page()
		return pred(last)
	})
	return last
}

// owaFarm serves two Exchange 2010-like back-ends whose OWA login lives in
// a cookie only the issuing server accepts, behind gatehouse with TLS and
// short keep-alives, so that every reload arrives on a new connection.
func owaFarm(t *testing.T, affinity string) string {
	t.Helper()
	var specs []string
	for _, name := range []string{"cas-a", "cas-b"} {
		s := exchangetest.NewUnstartedServer(name)
		s.FormsAuth = true
		s.Start()
		t.Cleanup(s.Close)
		specs = append(specs, name+"="+s.Addr)
	}
	f := &Frontend{Pool: newPool("owa", specs...), Config: Config{KeepAlive: 100 * time.Millisecond,
		Services: map[string]Service{OWA: {Affinity: affinity}}}}
	return tlsFrontend(t, f)
}

// login opens https://addr/, follows gatehouse's redirect to /owa/ and the
// back-end's to its logon page, and signs in as alice with a form post.
func login(t *testing.T, b *browser, addr string) string {
	t.Helper()
	if _, err := b.call("Page.navigate", map[string]any{"url": "https://" + addr + "/"}); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "the logon page", func(p string) bool { return strings.HasPrefix(p, "/owa/auth/logon.aspx||cas-") })
	b.eval(`document.getElementById("username").value = "alice";
		document.getElementById("password").value = "demo";
		document.getElementById("logon").submit(); "sent"`)
	return b.waitFor(t, "the mailbox page", func(p string) bool { return strings.HasPrefix(p, "/owa/|alice|cas-") })
}

func TestIntegrationChromiumOWALoginKeepsCookieAffinity(t *testing.T) {
	b := startChromium(t)
	addr := owaFarm(t, AffinityCookie)
	signedIn := login(t, b, addr)
	// Reloads arrive on new connections; only gatehouse's affinity cookie
	// brings them back to the back-end that holds alice's OWA session.
	for i := range 5 {
		time.Sleep(300 * time.Millisecond) // past the keep-alive: a new connection
		if _, err := b.call("Page.reload", map[string]any{"ignoreCache": true}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if got := b.waitFor(t, "the reloaded page", func(p string) bool { return strings.Count(p, "|") == 2 && !strings.HasSuffix(p, "|") }); got != signedIn {
			t.Fatalf("reload %d shows %q, want %q", i, got, signedIn)
		}
	}
}

func TestIntegrationChromiumOWALoginLostWithoutAffinity(t *testing.T) {
	b := startChromium(t)
	addr := owaFarm(t, AffinityNone)
	if _, err := b.call("Page.navigate", map[string]any{"url": "https://" + addr + "/"}); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "the logon page", func(p string) bool { return strings.HasPrefix(p, "/owa/auth/logon.aspx||cas-") })
	// Mark this document, so that a logon page seen later is known to be
	// a new one (the server sent alice back), not this one still showing.
	b.eval(`window.gatehouseOld = true;
		document.getElementById("username").value = "alice";
		document.getElementById("password").value = "demo";
		document.getElementById("logon").submit(); "sent"`)
	// Without affinity the requests after the login alternate between the
	// back-ends, and the one that did not issue alice's cookie sends her
	// back to the logon page: at once (the redirect after the form may
	// already land there) or on one of the reloads. This shows the test
	// above can fail.
	for range 7 {
		var got string
		eventually(t, 20*time.Second, "a new page", func() bool {
			// One evaluation, so that the page and the mark are read from
			// the same document.
			got = b.eval(`(window.gatehouseOld === true ? "old" : "new") + ":" + location.pathname + "|" + ((document.getElementById("user") || {}).textContent || "") + "|" + ((document.getElementById("backend") || {}).textContent || "")`)
			return strings.HasPrefix(got, "new:") && (strings.HasSuffix(got, "cas-a") || strings.HasSuffix(got, "cas-b"))
		})
		if strings.HasPrefix(got, "new:/owa/auth/logon.aspx") {
			return
		}
		time.Sleep(300 * time.Millisecond) // past the keep-alive: a new connection
		b.eval(`window.gatehouseOld = true; "marked"`)
		b.call("Page.reload", map[string]any{"ignoreCache": true})
		time.Sleep(200 * time.Millisecond)
	}
	t.Error("seven requests without affinity all kept the OWA session")
}
