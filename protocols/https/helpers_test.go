package https

import (
	"bufio"
	stdtls "crypto/tls"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// wait bounds every read, write and dial a test makes, so that a broken
// proxy fails a test instead of hanging it.
const wait = 10 * time.Second

// quiet is the logger of servers whose log lines a test does not read.
var quiet = slog.New(slog.DiscardHandler)

// TestMain fails the package when goroutines outlive the tests: every
// session, body pump and back-end a test starts must have ended.
func TestMain(m *testing.M) { wiretest.MainWithin(m, 10*time.Second) }

// listen opens a listener on ip with a port the kernel picks, closed when
// the test ends.
func listen(t testing.TB, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// newPool returns a pool named name over back-ends given as name=addr.
func newPool(name string, backends ...string) *proxy.Pool {
	p := &proxy.Pool{Name: name, ConnectTimeout: time.Second, PassiveFailures: -1}
	for _, nb := range backends {
		n, addr, _ := strings.Cut(nb, "=")
		p.Backends = append(p.Backends, proxy.NewBackend(n, addr, 1))
	}
	return p
}

// serve runs f on a proxy.Server listening on 127.0.0.1 and returns its
// address; the server is shut down when the test ends.
func serve(t testing.TB, f *Frontend) string {
	t.Helper()
	if f.Log == nil {
		f.Log = quiet
	}
	srv := &proxy.Server{Name: f.name(), Handler: f, Log: quiet}
	ln := listen(t, "127.0.0.1")
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
		deadline := time.Now().Add(wait)
		for srv.Active() > 0 {
			if time.Now().After(deadline) {
				t.Errorf("%d sessions still running %v after Close", srv.Active(), wait)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	return ln.Addr().String()
}

// backend is a scripted back-end: each accepted connection runs handle.
type backend struct {
	addr     string
	mu       sync.Mutex
	accepted int
	wg       sync.WaitGroup
}

// rawBackend starts a back-end on ip whose connections run handle; it
// closes every connection and waits for the handlers when the test ends.
func rawBackend(t testing.TB, ip string, handle func(c net.Conn, br *bufio.Reader)) *backend {
	t.Helper()
	ln := listen(t, ip)
	b := &backend{addr: ln.Addr().String()}
	var conns sync.Map
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.accepted++
			b.mu.Unlock()
			conns.Store(c, true)
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * wait))
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		b.wg.Wait()
	})
	return b
}

func (b *backend) connections() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.accepted
}

// httpBackend starts a back-end that answers every request with h, one
// request after the other on each connection (keep-alive), as net/http
// does; it is stopped when the test ends.
func httpBackend(t testing.TB, ip string, h http.Handler) string {
	t.Helper()
	ln := listen(t, ip)
	srv := &http.Server{Handler: h, ErrorLog: slog.NewLogLogger(quiet.Handler(), slog.LevelError)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// dial opens a client connection to the proxy with every operation
// bounded by wait.
func dial(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	return dialFrom(t, "127.0.0.1", addr)
}

// dialFrom is dial from a given loopback source address.
func dialFrom(t testing.TB, src, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := wiretest.DialFrom(t, src, addr)
	c.SetDeadline(time.Now().Add(wait))
	return c.Conn, c.R
}

// send writes raw protocol text.
func send(t testing.TB, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// rawHead reads one message head as lines, exactly as sent (CRLF removed).
func rawHead(t testing.TB, br *bufio.Reader) []string {
	t.Helper()
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading head after %q: %v", lines, err)
		}
		line = strings.TrimSuffix(line, "\r\n")
		if line == "" {
			return lines
		}
		lines = append(lines, line)
	}
}

// response reads one response with net/http's parser and its whole body.
func response(t testing.TB, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading response body: %v", err)
	}
	resp.Body.Close()
	return resp, string(body)
}

// get sends a GET on c and returns the response and body.
func get(t testing.TB, c net.Conn, br *bufio.Reader, path string, headers ...string) (*http.Response, string) {
	t.Helper()
	send(t, c, "GET "+path+" HTTP/1.1\r\nHost: mail.example.com\r\n"+strings.Join(append(headers, ""), "\r\n")+"\r\n")
	return response(t, br, "GET")
}

// hasLine reports whether lines holds want exactly.
func hasLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

// selfSigned makes a fresh certificate for localhost, mail.example.com
// and 127.0.0.1.
func selfSigned(t testing.TB) stdtls.Certificate {
	t.Helper()
	return wiretest.NewCertificate(t, "mail.example.com", "localhost", "mail.example.com")
}

// eventually polls cond until it holds, and fails the test naming what
// it waited for if d passes first.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !wiretest.Eventually(d, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// roundRobinProxy is a generic reverse proxy (net/http/httputil) in front
// of pool's back-ends: it balances each request on its own and opens a
// back-end connection per request, as a proxy that knows nothing of NTLM
// does. Tests use it to show that NTLM logins through gatehouse work
// because of its pinning, not by chance. It returns the proxy's address.
func roundRobinProxy(t testing.TB, pool *proxy.Pool, useTLS bool) string {
	t.Helper()
	var next atomic.Uint64
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			be := pool.Backends[int(next.Add(1))%len(pool.Backends)]
			r.SetURL(&url.URL{Scheme: "http", Host: be.Addr})
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{DisableKeepAlives: true},
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	srv := httptest.NewUnstartedServer(rp)
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}
