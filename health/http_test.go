package health

import (
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// exchangeFrontEnd answers like an Exchange front end: /owa/healthcheck.htm
// with 200 and the server's name while OWA is active, 503 while it is
// drained; it keeps the requests it saw.
type exchangeFrontEnd struct {
	mu      sync.Mutex
	drained bool
	seen    []*http.Request
}

func (x *exchangeFrontEnd) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x.mu.Lock()
	x.seen = append(x.seen, r)
	drained := x.drained
	x.mu.Unlock()
	switch {
	case r.URL.Path != "/owa/healthcheck.htm":
		http.Redirect(w, r, "/owa/", http.StatusFound)
	case drained:
		http.Error(w, "Service Unavailable", http.StatusServiceUnavailable)
	default:
		fmt.Fprint(w, "200 OK<br/>EXCH1.corp.example.test")
	}
}

// requests returns the requests seen so far.
func (x *exchangeFrontEnd) requests() []*http.Request {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]*http.Request(nil), x.seen...)
}

// startExchange serves an exchangeFrontEnd over plain HTTP.
func startExchange(t *testing.T) (*exchangeFrontEnd, string) {
	x := &exchangeFrontEnd{}
	srv := httptest.NewServer(x)
	t.Cleanup(srv.Close)
	return x, srv.Listener.Addr().String()
}

// The health page answers 200 with the server's name: up. The request
// carries the Host header asked for and asks for the connection's close.
func TestHTTPHealthcheckPasses(t *testing.T) {
	x, addr := startExchange(t)
	p := &HTTP{Path: "/owa/healthcheck.htm", Host: "mail.example.test", ExpectBody: "200 OK"}
	if err := probeNow(p, addr); err != nil {
		t.Fatal(err)
	}
	reqs := x.requests()
	if len(reqs) != 1 {
		t.Fatalf("server saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != "GET" || r.Host != "mail.example.test" || !r.Close {
		t.Errorf("request %s %s Host %q Close %v, want GET with Host mail.example.test and Connection: close",
			r.Method, r.URL, r.Host, r.Close)
	}
}

// A drained protocol answers 503: down at stage http, with the status.
func TestHTTPStatusMismatch(t *testing.T) {
	x, addr := startExchange(t)
	x.mu.Lock()
	x.drained = true
	x.mu.Unlock()
	err := probeNow(&HTTP{Path: "/owa/healthcheck.htm"}, addr)
	wantStage(t, err, StageHTTP)
	want := "http: http: GET /owa/healthcheck.htm answered 503 Service Unavailable, want 200"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

// The default path "/" of an Exchange server redirects (KB 3002351), and a
// redirect is not followed: down.
func TestHTTPRedirectNotFollowed(t *testing.T) {
	x, addr := startExchange(t)
	wantStage(t, probeNow(&HTTP{}, addr), StageHTTP)
	if reqs := x.requests(); len(reqs) != 1 || reqs[0].URL.Path != "/" {
		t.Errorf("server saw %d requests, want one for /", len(reqs))
	}
}

// A 200 whose body lacks the expected text is down: the probe may have
// reached some other server.
func TestHTTPBodyMismatch(t *testing.T) {
	_, addr := startExchange(t)
	err := probeNow(&HTTP{Path: "/owa/healthcheck.htm", ExpectBody: "EXCH2"}, addr)
	wantStage(t, err, StageHTTP)
	if !strings.Contains(err.Error(), `body lacks "EXCH2"`) {
		t.Errorf("error %q does not name the missing text", err)
	}
}

// ExpectStatus replaces 200.
func TestHTTPExpectStatus(t *testing.T) {
	_, addr := startExchange(t)
	if err := probeNow(&HTTP{ExpectStatus: http.StatusFound}, addr); err != nil {
		t.Fatal(err)
	}
}

// The body is read up to 64 KiB, no further: text beyond is not found.
func TestHTTPBodyBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("x", maxBody), "needle")
	}))
	t.Cleanup(srv.Close)
	err := probeNow(&HTTP{ExpectBody: "needle"}, srv.Listener.Addr().String())
	wantStage(t, err, StageHTTP)
}

// A server that accepts and never answers fails at the timeout.
func TestHTTPSilentServerTimesOut(t *testing.T) {
	f := startFake(t, func(p *peer) { p.drain() })
	const timeout = 150 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := (&HTTP{}).Probe(ctx, f.addr)
	if took := time.Since(start); took >= 2*timeout {
		t.Errorf("probe took %v, want under %v", took, 2*timeout)
	}
	wantStage(t, err, StageTimeout)
}

// HTTPS: the server name comes from Host when given, and the certificate
// is verified against it.
func TestHTTPS(t *testing.T) {
	var names []string
	var mu sync.Mutex
	srv := httptest.NewUnstartedServer(&exchangeFrontEnd{})
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &stdtls.Config{GetConfigForClient: func(hello *stdtls.ClientHelloInfo) (*stdtls.Config, error) {
		mu.Lock()
		names = append(names, hello.ServerName)
		mu.Unlock()
		return nil, nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	// httptest's certificate is for 127.0.0.1 and *.example.com.
	p := &HTTP{HTTPS: true, Path: "/owa/healthcheck.htm", Host: "mail.example.com", TLSConfig: &stdtls.Config{RootCAs: roots}}
	if err := probeNow(p, srv.Listener.Addr().String()); err != nil {
		t.Fatal(err)
	}
	p.Host = "mail.example.net"
	wantStage(t, probeNow(p, srv.Listener.Addr().String()), StageTLS)
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(names, " ") != "mail.example.com mail.example.net" {
		t.Errorf("server names %q, want mail.example.com then mail.example.net", names)
	}
	if p.TLSConfig.ServerName != "" {
		t.Errorf("the probe changed its TLSConfig")
	}
}
