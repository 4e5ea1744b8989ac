package gatehouse

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	stdtls "crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// A tcp listener with implicit TLS terminates it with the local CA's
// certificate (which a client can trust after `gatehouse tls export-ca`)
// and re-encrypts to a back-end whose pinned certificate it checks.
func TestTCPListenerTerminatesAndReencryptsTLS(t *testing.T) {
	ex := exchangetest.NewTLSServer("ex1")
	defer ex.Close()
	state := t.TempDir()
	srv := startServer(t, fmt.Sprintf(`
state_dir: %q
admin: {listen: "off"}
log: {level: error}
backends: {ex1: {address: %q}}
listeners:
  - name: https
    listen: 127.0.0.1:0
    backends: [ex1]
    tls: {mode: implicit}
    backend_tls: {mode: tls, fingerprint: %q}
    health: {probe: https, path: /owa/healthcheck.htm, expect_body: "200 OK"}
`, state, ex.Addr, fingerprint(ex.Certificate())))

	var ca bytes.Buffer
	if err := tls.ExportCA(filepath.Join(state, "certificates"), &ca); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.Bytes()) {
		t.Fatal("exported CA is not PEM")
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &stdtls.Config{RootCAs: roots, ServerName: "localhost"},
	}}
	resp, err := client.Get("https://" + srv.Addrs()["https"][0] + "/owa/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Backend"); got != "ex1" {
		t.Errorf("X-Backend = %q, want ex1", got)
	}
	if v := resp.TLS.Version; v < stdtls.VersionTLS12 {
		t.Errorf("TLS version %x below 1.2", v)
	}
}

// A back-end presenting another certificate than the pinned one gets no
// session: the pin is what makes a self-signed Exchange certificate safe.
func TestTCPListenerRefusesWrongBackendCertificate(t *testing.T) {
	ex, other := exchangetest.NewTLSServer("ex1"), exchangetest.NewTLSServer("other")
	defer ex.Close()
	defer other.Close()
	srv := startServer(t, fmt.Sprintf(`
state_dir: %q
admin: {listen: "off"}
log: {level: error}
backends: {ex1: {address: %q}}
listeners:
  - name: l4
    listen: 127.0.0.1:0
    backends: [ex1]
    backend_tls: {mode: tls, fingerprint: %q}
`, t.TempDir(), ex.Addr, fingerprint(other.Certificate())))
	c, err := net.DialTimeout("tcp", srv.Addrs()["l4"][0], 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /owa/ HTTP/1.0\r\n\r\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
		t.Fatalf("got a response through a back-end with the wrong certificate: %q", line)
	}
}

// fingerprint is the SHA-256 of a certificate, as backend_tls pins it.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
