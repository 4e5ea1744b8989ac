package gatehouse

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

func parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// load runs clients that each open a session, exchange lines for a while
// and close, until stop; it counts sessions and failures.
type load struct {
	ok, failed atomic.Int64
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(addr string, clients int) *load {
	l := &load{stop: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := session(addr, 5); err != nil {
					l.failed.Add(1)
				} else {
					l.ok.Add(1)
				}
			}
		}()
	}
	return l
}

func (l *load) end() { close(l.stop); l.wg.Wait() }

// session opens one connection and makes n round trips on it, slowly, so
// sessions are in flight across reloads.
func session(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for i := range n {
		msg := fmt.Sprintf("ping %d\n", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		k, err := c.Read(buf)
		if err != nil {
			return err
		}
		if !strings.HasSuffix(string(buf[:k]), msg) {
			return fmt.Errorf("got %q", buf[:k])
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Under a steady load, reloads change a weight, add a listener and remove a
// back-end: no session in flight fails and the kept port never refuses.
func TestReloadUnderLoadDropsNothing(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	defer a.Close()
	defer b.Close()
	main, extra := wiretest.FreeAddr(t), wiretest.FreeAddr(t)
	base := `
admin: {listen: "off"}
log: {level: error}
shutdown_grace: 5s
backends:
  a: {address: %q}
  b: {address: %q, weight: %d}
listeners:
  - {name: main, listen: %q, backends: [%s]}
%s`
	srv := startServer(t, fmt.Sprintf(base, a.Addr(), b.Addr(), 1, main, "a, b", ""))
	l := startLoad(main, 8)
	steps := []string{
		fmt.Sprintf(base, a.Addr(), b.Addr(), 3, main, "a, b", ""),
		fmt.Sprintf(base, a.Addr(), b.Addr(), 3, main, "a, b", fmt.Sprintf("  - {name: extra, listen: %q, backends: [a]}\n", extra)),
		fmt.Sprintf(base, a.Addr(), b.Addr(), 3, main, "a", fmt.Sprintf("  - {name: extra, listen: %q, backends: [a]}\n", extra)),
	}
	for _, yaml := range steps {
		time.Sleep(300 * time.Millisecond)
		if err := srv.Reload(parse(t, yaml)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	l.end()
	if l.failed.Load() != 0 || l.ok.Load() < 20 {
		t.Fatalf("sessions ok %d, failed %d: a reload disturbed live sessions", l.ok.Load(), l.failed.Load())
	}
	if err := session(extra, 1); err != nil {
		t.Errorf("added listener: %v", err)
	}
	if got := ask(t, main, "x"); got != "a x" {
		t.Errorf("after removing b: %q", got)
	}
}

// A reload whose new port is taken changes nothing.
func TestReloadFailureKeepsRunningConfig(t *testing.T) {
	a := echoServer(t, "a")
	defer a.Close()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	main := wiretest.FreeAddr(t)
	yaml := `
admin: {listen: "off"}
log: {level: error}
backends: {a: {address: %q}}
listeners:
  - {name: main, listen: %q, backends: [a]}
%s`
	srv := startServer(t, fmt.Sprintf(yaml, a.Addr(), main, ""))
	err = srv.Reload(parse(t, fmt.Sprintf(yaml, a.Addr(), main, fmt.Sprintf("  - {name: clash, listen: %q, backends: [a]}\n", busy.Addr()))))
	if err == nil {
		t.Fatal("reload onto a busy port succeeded")
	}
	if got := ask(t, main, "still"); got != "a still" {
		t.Errorf("after the failed reload: %q", got)
	}
}

// Drain: live sessions on the back-end go on, new ones avoid it; enable
// brings it back. Disable closes its sessions after the grace period.
func TestAdminDrainEnableDisable(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	defer a.Close()
	defer b.Close()
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0", disable_grace: 200ms}
log: {level: error}
backends: {a: {address: %q}, b: {address: %q}}
listeners:
  - {name: main, listen: 127.0.0.1:0, backends: [a, b]}
`, a.Addr(), b.Addr()))
	addr := srv.Addrs()["main"][0]
	live := dialLine(t, addr) // round-robin starts with a
	if got := live.ask("one"); got != "a one" {
		t.Fatalf("first session: %q", got)
	}
	post(t, srv, "/api/backends/a/drain", "", http.StatusOK)
	for range 4 {
		if got := ask(t, addr, "new"); got != "b new" {
			t.Fatalf("new session while a drains: %q", got)
		}
	}
	if got := live.ask("two"); got != "a two" {
		t.Fatalf("live session on the draining back-end: %q", got)
	}
	post(t, srv, "/api/backends/a/enable", "", http.StatusOK)
	reached := map[string]bool{}
	for range 4 {
		reached[ask(t, addr, "back")] = true
	}
	if !reached["a back"] {
		t.Fatalf("after enable no new session reached a: %v", reached)
	}
	post(t, srv, "/api/backends/a/disable", "", http.StatusOK)
	waitFor(t, func() bool { return live.closed() })
	post(t, srv, "/api/backends/nosuch/drain", "", http.StatusNotFound)
	if st := srv.Status(); st.Changes[0].State != "disabled" || st.Changes[0].Backend != "a" {
		t.Errorf("recent changes: %+v", st.Changes)
	}
}

// Bound beyond loopback, the admin API speaks TLS and wants the token.
func TestAdminTokenRequiredOffLoopback(t *testing.T) {
	a := echoServer(t, "a")
	defer a.Close()
	const token = "correct-horse-battery-staple"
	srv := startServer(t, fmt.Sprintf(`
state_dir: %q
admin: {listen: "0.0.0.0:0", token: %q}
log: {level: error}
backends: {a: {address: %q}}
listeners: [{name: main, listen: 127.0.0.1:0, backends: [a]}]
`, t.TempDir(), token, a.Addr()))
	_, port, _ := net.SplitHostPort(srv.AdminAddr())
	url := "https://127.0.0.1:" + port + "/api/backends/a/drain"
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &stdtls.Config{InsecureSkipVerify: true}}}
	for _, tt := range []struct {
		auth string
		want int
	}{{"", 401}, {"Bearer wrong-token-of-some-length", 401}, {"Basic " + token, 401}, {"Bearer " + token, 200}} {
		req, _ := http.NewRequest(http.MethodPost, url, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("Authorization %q: status %d, want %d", tt.auth, resp.StatusCode, tt.want)
		}
	}
	if _, err := config.Parse("x.yaml", []byte(`
admin: {listen: "0.0.0.0:9900"}
backends: {a: {address: "127.0.0.1:1"}}
listeners: [{name: main, listen: 127.0.0.1:0, backends: [a]}]
`)); err == nil || !strings.Contains(err.Error(), "admin.token") {
		t.Errorf("non-loopback admin without a token: %v", err)
	}
}

func post(t *testing.T, srv *Server, path, token string, want int) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://"+srv.AdminAddr()+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d, want %d", path, resp.StatusCode, want)
	}
}

// lineConn is a session kept open across steps of a test.
type lineConn struct {
	t *testing.T
	c net.Conn
}

func dialLine(t *testing.T, addr string) *lineConn {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &lineConn{t, c}
}

func (l *lineConn) ask(line string) string {
	l.c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(l.c, "%s\n", line)
	buf := make([]byte, 256)
	n, err := l.c.Read(buf)
	if err != nil {
		l.t.Fatalf("live session: %v", err)
	}
	return strings.TrimSpace(string(buf[:n]))
}

func (l *lineConn) closed() bool {
	l.c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := l.c.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
