package https

import (
	"bufio"
	"bytes"
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// dialTLS opens a TLS client connection to the proxy with the given SNI,
// offering h2 and http/1.1 as browsers do.
func dialTLS(t *testing.T, addr, sni string) (*stdtls.Conn, *bufio.Reader) {
	t.Helper()
	c, err := stdtls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", addr,
		&stdtls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatalf("TLS dial %s (%s): %v", addr, sni, err)
	}
	c.SetDeadline(time.Now().Add(wait))
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func TestEdgeTLSSpeaksHTTP1Only(t *testing.T) {
	be := echoBackend(t, "a")
	addr := tlsFrontend(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dialTLS(t, addr, "mail.example.com")
	// NTLM cannot run over HTTP/2: the edge never negotiates it.
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("negotiated %q, want http/1.1", p)
	}
	_, body := get(t, c, br, "/owa/")
	if lines, _ := echoed(body); !hasLine(lines, "X-Forwarded-Proto: https") {
		t.Errorf("back-end saw %q, want X-Forwarded-Proto: https", lines)
	}
}

// trusting returns a client config trusting exactly the server's
// certificate.
func trusting(s *exchangetest.Server) *stdtls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(s.Certificate())
	return &stdtls.Config{RootCAs: roots, ServerName: "localhost"}
}

func TestBackendsOverTLS(t *testing.T) {
	s := exchangetest.NewTLSServer("cas-a")
	t.Cleanup(s.Close)
	addr := tlsFrontend(t, &Frontend{Pool: newPool("web", "cas-a="+s.Addr), Link: proxy.Link{BackendTLSMode: proxy.TLSImplicit, BackendTLS: trusting(s)}})
	c, br := dialTLS(t, addr, "mail.example.com")
	for range 3 {
		if resp, body := get(t, c, br, "/ews/x"); resp.StatusCode != 200 || !strings.Contains(body, "cas-a served /ews/x") {
			t.Fatalf("over TLS both ways: %d %q", resp.StatusCode, body)
		}
	}
}

// sameCertBackend serves HTTPS with cert, answering 200.
func sameCertBackend(t *testing.T, cert stdtls.Certificate) string {
	t.Helper()
	ln := listen(t, "127.0.0.1")
	tl := stdtls.NewListener(ln, &stdtls.Config{Certificates: []stdtls.Certificate{cert}})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), ErrorLog: nil}
	go srv.Serve(tl)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestExtendedProtectionCertificateComparison(t *testing.T) {
	edge := selfSigned(t)
	other := exchangetest.NewTLSServer("cas-b")
	t.Cleanup(other.Close)
	same := sameCertBackend(t, edge)
	var logs wiretest.Logs
	f := &Frontend{
		Name: "exch",
		Pool: newPool("exch", "cas-a="+same, "cas-b="+other.Addr), Link: proxy.Link{EdgeTLS: &stdtls.Config{Certificates: []stdtls.Certificate{edge}}, TLSMode: proxy.TLSImplicit, BackendTLSMode: proxy.TLSImplicit, BackendTLS: &stdtls.Config{InsecureSkipVerify: true}, Log: logs.Logger(slog.LevelDebug)},
	}
	checks := f.CheckCertificates(context.Background())
	byName := map[string]CertCheck{}
	for _, c := range checks {
		byName[c.Backend] = c
	}
	// cas-a presents gatehouse's own certificate: NTLM survives Extended
	// Protection. cas-b presents its own: the operator is told, loudly.
	if c := byName["cas-a"]; !c.Match || c.Presented != c.Edge {
		t.Errorf("cas-a: %+v, want a match", c)
	}
	if c := byName["cas-b"]; c.Match || c.Presented == "" || c.Presented == c.Edge {
		t.Errorf("cas-b: %+v, want a mismatch", c)
	}
	if !strings.Contains(logs.String(), "EXTENDED PROTECTION WILL BREAK NTLM/NEGOTIATE") || !strings.Contains(logs.String(), "backend=cas-b") {
		t.Errorf("no warning naming cas-b in the log:\n%s", logs.String())
	}
	if g := testutil.ToFloat64(certMismatch.WithLabelValues("exch", "cas-b")); g != 1 {
		t.Errorf("mismatch metric for cas-b = %v, want 1", g)
	}
	if g := testutil.ToFloat64(certMismatch.WithLabelValues("exch", "cas-a")); g != 0 {
		t.Errorf("mismatch metric for cas-a = %v, want 0", g)
	}
	if st := f.CertificateStatus(); len(st) != 2 {
		t.Errorf("CertificateStatus() = %+v", st)
	}
}

func TestCertificateComparisonFlagsTLSOffload(t *testing.T) {
	be := echoBackend(t, "a")
	f := &Frontend{Pool: newPool("offload", "a="+be.addr), Link: proxy.Link{TLSMode: proxy.TLSImplicit, EdgeTLS: &stdtls.Config{Certificates: []stdtls.Certificate{selfSigned(t)}}, Log: quiet}}
	checks := f.CheckCertificates(context.Background())
	if len(checks) != 1 || checks[0].Match || !strings.Contains(checks[0].Problem, "plain HTTP") {
		t.Errorf("plain back-end: %+v, want a mismatch for TLS offloading", checks)
	}
}

func TestWatchCertificatesRechecksOnChange(t *testing.T) {
	first, second := selfSigned(t), selfSigned(t)
	current := first
	changed := make(chan struct{})
	s := exchangetest.NewTLSServer("cas-a")
	t.Cleanup(s.Close)
	f := &Frontend{Pool: newPool("watch", "cas-a="+s.Addr),
		Config: Config{CertCheckInterval: 20 * time.Millisecond}, Link: proxy.Link{TLSMode: proxy.TLSImplicit, BackendTLSMode: proxy.TLSImplicit, Log: quiet},
	}
	f.EdgeTLS = &stdtls.Config{GetCertificate: func(*stdtls.ClientHelloInfo) (*stdtls.Certificate, error) {
		select {
		case <-changed:
			return &second, nil
		default:
			return &current, nil
		}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.WatchCertificates(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, wait, "the first comparison", func() bool { return len(f.CertificateStatus()) == 1 })
	before := f.CertificateStatus()[0]
	close(changed)
	eventually(t, wait, "a comparison with the new certificate", func() bool {
		st := f.CertificateStatus()
		return len(st) == 1 && st[0].Edge != before.Edge
	})
}

func TestTLSPassthroughBySNI(t *testing.T) {
	legacy := exchangetest.NewTLSServer("legacy")
	t.Cleanup(legacy.Close)
	web := echoBackend(t, "web")
	f := &Frontend{
		Pool:     newPool("edge", "web="+web.addr),
		Services: map[string]*proxy.Pool{EWS: newPool("edge/ews", "legacy="+legacy.Addr)},
		Config:   Config{Services: map[string]Service{EWS: {TLS: TLSPassthrough, SNI: []string{"Legacy.example.com"}}}},
	}
	addr := tlsFrontend(t, f)
	// legacy.example.com reaches the back-end's own TLS: the client sees
	// its certificate, as Extended Protection needs.
	c, br := dialTLS(t, addr, "legacy.example.com")
	if got := c.ConnectionState().PeerCertificates[0]; !bytes.Equal(got.Raw, legacy.Certificate().Raw) {
		t.Errorf("passthrough client saw %s, want the back-end's certificate", got.Subject)
	}
	if resp, body := get(t, c, br, "/ews/x"); resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "legacy" {
		t.Errorf("passthrough: %d %q", resp.StatusCode, body)
	}
	// Other names are terminated here and routed by path.
	c2, br2 := dialTLS(t, addr, "mail.example.com")
	if bytes.Equal(c2.ConnectionState().PeerCertificates[0].Raw, legacy.Certificate().Raw) {
		t.Error("mail.example.com saw the passed-through back-end's certificate")
	}
	if resp, _ := get(t, c2, br2, "/owa/"); resp.Header.Get("X-Backend") != "web" {
		t.Errorf("terminated request went to %q", resp.Header.Get("X-Backend"))
	}
}

func TestGracefulShutdown(t *testing.T) {
	servers, specs := pingServers(t, 2*time.Second)
	f := &Frontend{Pool: newPool("drain", specs...), Link: proxy.Link{Log: quiet}}
	srv := &proxy.Server{Name: "drain", Handler: f, Log: quiet}
	ln := listen(t, "127.0.0.1")
	served := make(chan struct{})
	go func() { srv.Serve(ln); close(served) }()
	addr := ln.Addr().String()
	idle, idleBr := dial(t, addr)
	get(t, idle, idleBr, "/owa/")
	busy, busyBr := dial(t, addr)
	send(t, busy, strings.Replace(pingRequest, "%s", "dev1", 1))
	eventually(t, wait, "the Ping held", func() bool { return heldPings(servers) == 1 })
	shut := make(chan error, 1)
	start := time.Now()
	go func() { shut <- srv.Shutdown(context.Background()) }()
	// The idle keep-alive connection is closed at once; the held Ping is
	// answered, with Connection: close, then its connection ends too.
	if line, err := idleBr.ReadString('\n'); err == nil || time.Since(start) > time.Second {
		t.Errorf("idle connection read %q, %v after %v of shutdown, want EOF at once", line, err, time.Since(start))
	}
	resp, _ := response(t, busyBr, "POST")
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("held Ping during shutdown: %d close=%v, want 200 and close", resp.StatusCode, resp.Close)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Shutdown did not return")
	}
	<-served
}

func TestRefuseSaysTooManyConnections(t *testing.T) {
	be := echoBackend(t, "a")
	f := &Frontend{Pool: newPool("limited", "a="+be.addr), Link: proxy.Link{Log: quiet}}
	srv := &proxy.Server{Name: "limited", Handler: f, MaxPerIP: 1, Log: quiet}
	ln := listen(t, "127.0.0.1")
	served := make(chan struct{})
	go func() { srv.Serve(ln); close(served) }()
	defer func() { srv.Close(); <-served }()
	first, firstBr := dial(t, ln.Addr().String())
	get(t, first, firstBr, "/owa/")
	_, br := dial(t, ln.Addr().String())
	resp, body := response(t, br, "GET")
	if resp.StatusCode != 503 || !strings.Contains(body, "too many connections") {
		t.Errorf("second connection: %d %q", resp.StatusCode, body)
	}
}
