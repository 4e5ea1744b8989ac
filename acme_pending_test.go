package gatehouse

import (
	"bufio"
	stdtls "crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/tls"
)

// An ACME CA that refuses connections does not keep gatehouse from
// starting: the plaintext listener relays, and the TLS listener of the
// pending certificate set serves its temporary certificate and relays too.
// (tls's tests show the real certificate replacing it once the CA is up.)
func TestUnreachableACMECALeavesListenersServing(t *testing.T) {
	echo := echoServer(t, "be1")
	defer echo.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	caAddr := closed.Addr().String()
	closed.Close() // the CA's address now refuses connections
	srv := startServer(t, fmt.Sprintf(`
state_dir: %q
admin: {listen: "off"}
log: {level: error}
certificates:
  acme:
    source: acme
    names: [mail.gatehouse.test]
    email: postmaster@gatehouse.test
    ca: https://%s/dir
    challenges: [tls-alpn-01]
backends: {be1: {address: %q}}
listeners:
  - name: plain
    listen: 127.0.0.1:0
    backends: [be1]
  - name: secure
    listen: 127.0.0.1:0
    backends: [be1]
    tls: {mode: implicit, certificates: acme}
`, t.TempDir(), caAddr, echo.Addr().String()))

	if got := ask(t, srv.Addrs()["plain"][0], "hello"); got != "be1 hello" {
		t.Errorf("plain listener: %q", got)
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := stdtls.DialWithDialer(d, "tcp", srv.Addrs()["secure"][0], &stdtls.Config{ServerName: "mail.gatehouse.test", InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS listener of the pending set: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if org := c.ConnectionState().PeerCertificates[0].Subject.Organization; !slices.Equal(org, []string{tls.TemporaryOrganization}) {
		t.Errorf("served organization %v, want the temporary certificate", org)
	}
	fmt.Fprintf(c, "hello\n")
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(reply) != "be1 hello" {
		t.Errorf("through the TLS listener: %q, %v", reply, err)
	}
}
