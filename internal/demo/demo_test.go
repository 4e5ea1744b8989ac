package demo

import (
	"bytes"
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse"
	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/examples"
	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// `gatehouse demo` runs examples/demo.yaml in front of its demo back-ends:
// a session through each demo port reaches a demo back-end, as the README
// promises, with real clients (Go's net/smtp, curl).
func TestIntegrationDemo(t *testing.T) {
	curl := requireTool(t, "curl", "curl")
	dir := t.TempDir()
	t.Chdir(dir) // the demo keeps its state (CA, map file) in ./.gatehouse-demo
	cfg, err := config.Parse("examples/demo.yaml", examples.Demo)
	if err != nil {
		t.Fatal(err)
	}
	ports := offDemoPorts(t, cfg) // the tests may run beside a `make demo`
	backends, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer backends.Close()
	srv, err := gatehouse.NewServer(cfg, gatehouse.NewLogger(config.Log{Level: "error"}, os.Stderr))
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Close()
	var ca bytes.Buffer
	if err := tls.ExportCA(filepath.Join(".gatehouse-demo", "certificates"), &ca); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.Bytes(), 0o644)

	waitFor(t, func() bool { return allUp(srv) }) // the first probes have run
	t.Run("smtp with STARTTLS", func(t *testing.T) {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(ca.Bytes())
		c, err := smtp.Dial(ports["smtp"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("client.example.com"); err != nil {
			t.Fatal(err)
		}
		if err := c.StartTLS(&stdtls.Config{ServerName: "localhost", RootCAs: roots}); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("bob@example.com"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("alice@example.com"); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(w, "Subject: hi\r\n\r\nhello\r\n")
		if err := w.Close(); err != nil { // 250 only after the back-end's 250
			t.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	})
	for _, tt := range []struct{ name, url, user, want string }{
		{"pop3 alice on demo-a", "pop3://localhost:" + port(ports["pop3"]) + "/1", "alice:demo", "alice@demo-a"},
		{"imap bob on demo-b", "imap://localhost:" + port(ports["imap"]) + "/INBOX;MAILINDEX=1", "bob:demo", "bob@demo-b"},
		{"https", "https://localhost:" + port(ports["https"]) + "/owa/", "", "X-Backend: demo-"},
		{"http redirects to https", "http://" + ports["http"] + "/owa/", "", "Location: https://127.0.0.1:" + port(ports["https"]) + "/owa/"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"-sS", "--max-time", "10", "--cacert", caFile, "-D", "-", tt.url}
			if !strings.HasPrefix(tt.url, "http") {
				args = append(args, "--ssl-reqd") // STLS/STARTTLS, refused without it
			}
			if tt.user != "" {
				args = append(args, "-u", tt.user)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, curl, args...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), tt.want) {
				t.Fatalf("curl %s: %v\n%s", tt.url, err, out)
			}
		})
	}
}

func allUp(srv *gatehouse.Server) bool {
	for _, l := range srv.Status().Listeners {
		for _, b := range l.Backends {
			if !b.Usable {
				return false
			}
		}
	}
	return true
}

// requireTool returns the path of a program the test drives, and fails the
// test naming the Debian package when it is missing (.ci/run installs it).
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (.ci/run does)", name, pkg)
	}
	return p
}

// offDemoPorts moves the demo's listeners, admin and back-ends off the
// addresses a running `make demo` holds: free loopback ports for the
// listeners, and 127.0.0.111/112 with free ports for the back-ends. It
// returns each listener's address by name ("http" for the port-80 one).
func offDemoPorts(t *testing.T, cfg *config.Config) map[string]string {
	t.Helper()
	cfg.Admin.Listen = "127.0.0.1:0"
	ports := map[string]string{"http": wiretest.FreeAddr(t, "127.0.0.1")}
	cfg.HTTP.Listen = config.StringList{ports["http"]}
	cfg.Backends["demo-a"] = config.Backend{Address: "127.0.0.111"}
	cfg.Backends["demo-b"] = config.Backend{Address: "127.0.0.112"}
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		ports[l.Name] = wiretest.FreeAddr(t, "127.0.0.1")
		l.Listen = config.StringList{ports[l.Name]}
		l.Port, _ = strconv.Atoi(port(wiretest.FreeAddr(t, "127.0.0.111")))
		if l.Name == "https" {
			cfg.HTTP.HTTPSPort, _ = strconv.Atoi(port(ports["https"]))
		}
	}
	return ports
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
