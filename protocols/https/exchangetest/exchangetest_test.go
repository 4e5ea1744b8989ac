package exchangetest

import (
	"bufio"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

const testTimeout = wiretest.Wait

// start runs a plain-HTTP server named cas-a for the length of the test.
func start(t *testing.T) *Server {
	t.Helper()
	s := NewServer("cas-a")
	t.Cleanup(s.Close)
	return s
}

// get fetches path from s with s's own client and returns status, the
// X-Backend header and the body.
func get(t *testing.T, s *Server, path string) (int, string, string) {
	t.Helper()
	c := s.Client()
	c.Timeout = testTimeout
	resp, err := c.Get(s.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp.StatusCode, resp.Header.Get("X-Backend"), string(body)
}

func TestHealthcheckEveryVirtualDirectory(t *testing.T) {
	s := start(t)
	for _, vdir := range VirtualDirectories() {
		for _, path := range []string{
			"/" + vdir + "/healthcheck.htm",
			"/" + strings.ToUpper(vdir) + "/HealthCheck.htm", // IIS paths ignore case
			"/" + strings.ToLower(vdir) + "/healthcheck.htm",
		} {
			code, backend, body := get(t, s, path)
			if code != http.StatusOK || backend != "cas-a" || body != "200 OK<br/>cas-a" {
				t.Errorf("GET %s = %d, X-Backend %q, body %q; want 200, cas-a, %q", path, code, backend, body, "200 OK<br/>cas-a")
			}
		}
	}
	if got := s.Requests(); got != 3*len(VirtualDirectories()) {
		t.Errorf("Requests() = %d, want %d", got, 3*len(VirtualDirectories()))
	}
}

func TestSetDown(t *testing.T) {
	s := start(t)
	s.SetDown("EWS", true)
	// Health is per protocol: EWS is out, OWA stays in.
	for path, want := range map[string]int{
		"/ews/healthcheck.htm": http.StatusServiceUnavailable,
		"/EWS/healthcheck.htm": http.StatusServiceUnavailable,
		"/owa/healthcheck.htm": http.StatusOK,
	} {
		if code, backend, _ := get(t, s, path); code != want || backend != "cas-a" {
			t.Errorf("GET %s = %d from %q, want %d from cas-a", path, code, backend, want)
		}
	}
	s.SetDown("/ews/", false)
	if code, _, _ := get(t, s, "/EWS/healthcheck.htm"); code != http.StatusOK {
		t.Errorf("after SetDown(false): %d, want 200", code)
	}
}

func TestPages(t *testing.T) {
	s := start(t)
	for _, tc := range []struct {
		path, contains string
	}{
		{"/owa/", "Served by back-end <strong>cas-a</strong>"},
		{"/OWA", "<title>Outlook on the web - cas-a</title>"},
		{"/EWS/Exchange.asmx", "cas-a served /EWS/Exchange.asmx"},
		{"/owa/x/healthcheck.htm", "cas-a served /owa/x/healthcheck.htm"}, // not a vdir root
		{"/foo/healthcheck.htm", "cas-a served /foo/healthcheck.htm"},
		{"/", "cas-a served /"},
	} {
		code, backend, body := get(t, s, tc.path)
		if code != http.StatusOK || backend != "cas-a" || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s = %d from %q, body %q; want 200 from cas-a containing %q", tc.path, code, backend, body, tc.contains)
		}
	}
}

func TestNameIsEscaped(t *testing.T) {
	s := NewServer(`<b>"cas"</b>`)
	t.Cleanup(s.Close)
	for _, path := range []string{"/owa/healthcheck.htm", "/owa/"} {
		if _, _, body := get(t, s, path); strings.Contains(body, "<b>") {
			t.Errorf("GET %s: body %q holds the name unescaped", path, body)
		}
	}
}

func TestRawKeepAliveTranscript(t *testing.T) {
	s := start(t)
	c, err := net.DialTimeout("tcp", s.Addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	br := bufio.NewReader(c)

	// Two requests on one connection, as a load balancer's monitor sends them.
	io.WriteString(c, "GET /Microsoft-Server-ActiveSync/healthcheck.htm HTTP/1.1\r\nHost: mail.example.org\r\n\r\n")
	expectResponse(t, br, http.StatusOK, "200 OK<br/>cas-a")
	s.SetDown("microsoft-server-activesync", true)
	io.WriteString(c, "GET /Microsoft-Server-ActiveSync/healthcheck.htm HTTP/1.1\r\nHost: mail.example.org\r\n\r\n")
	expectResponse(t, br, http.StatusServiceUnavailable, "503 Service Unavailable")

	// Close ends the idle keep-alive connection too.
	wiretest.CloseWithin(t, s.Close)
	if line, err := br.ReadString('\n'); err == nil || isTimeout(err) {
		t.Fatalf("read %q, %v after Close; want the connection closed", line, err)
	}
	assertGoroutinesGone(t)
}

func expectResponse(t *testing.T, br *bufio.Reader, code int, body string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != code || string(got) != body || resp.Header.Get("X-Backend") != "cas-a" {
		t.Fatalf("response %d %q (X-Backend %q), %v; want %d %q from cas-a",
			resp.StatusCode, got, resp.Header.Get("X-Backend"), err, code, body)
	}
}

func TestTLS(t *testing.T) {
	s := NewTLSServer("cas-b.example.org")
	t.Cleanup(s.Close)
	if !strings.HasPrefix(s.URL, "https://127.0.0.1:") {
		t.Fatalf("URL = %q, want https on 127.0.0.1", s.URL)
	}
	cert := s.Certificate()
	if cert == nil {
		t.Fatal("Certificate() = nil for a TLS server")
	}
	for _, host := range []string{"127.0.0.1", "localhost", "cas-b.example.org"} {
		if err := cert.VerifyHostname(host); err != nil {
			t.Errorf("certificate does not cover %s: %v", host, err)
		}
	}

	// Client trusts exactly this certificate.
	if code, backend, _ := get(t, s, "/mapi/healthcheck.htm"); code != http.StatusOK || backend != "cas-b.example.org" {
		t.Errorf("GET over HTTPS = %d from %q", code, backend)
	}
	// A client that does not know the certificate refuses it.
	plain := &http.Client{Timeout: testTimeout}
	_, err := plain.Get(s.URL + "/owa/healthcheck.htm")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("GET with system roots: %v, want an unknown-authority error", err)
	}
}

func TestPlainServerHasNoCertificate(t *testing.T) {
	s := start(t)
	if s.Certificate() != nil || !strings.HasPrefix(s.URL, "http://") {
		t.Errorf("plain server: Certificate() = %v, URL = %q", s.Certificate(), s.URL)
	}
}

func TestStartOnChosenAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewUnstartedServer("cas-c")
	s.StartTLSOn(ln)
	t.Cleanup(s.Close)
	if s.Addr != ln.Addr().String() {
		t.Errorf("Addr = %q, want the listener's %q", s.Addr, ln.Addr())
	}
	if code, backend, _ := get(t, s, "/oab/healthcheck.htm"); code != http.StatusOK || backend != "cas-c" {
		t.Errorf("GET = %d from %q", code, backend)
	}
	s.Close()
	s.Close() // a second Close is harmless
	NewUnstartedServer("never started").Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// assertGoroutinesGone fails if, shortly after Close, a goroutine still
// serves an HTTP connection.
func assertGoroutinesGone(t *testing.T) {
	t.Helper()
	wiretest.GoroutinesGone(t, "net/http.(*conn).serve", "exchangetest.(*Server)")
}
