package gatehouse

import (
	"bytes"
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"fmt"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/examples"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// `gatehouse demo` runs examples/demo.yaml in front of its demo back-ends:
// a session through each demo port reaches a demo back-end, as the README
// promises, with real clients (Go's net/smtp, curl).
func TestIntegrationDemo(t *testing.T) {
	curl := requireTool(t, "curl", "curl")
	dir := t.TempDir()
	t.Chdir(dir) // the demo keeps its state (CA, map file) in ./.gatehouse-demo
	cfg, err := ParseConfig("examples/demo.yaml", examples.Demo)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.Listen = "127.0.0.1:0" // the tests may run beside a `make demo`
	backends, err := StartDemoBackends(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer backends.Close()
	srv, err := NewServer(cfg, NewLogger(Log{Level: "error"}, os.Stderr))
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
		c, err := smtp.Dial("127.0.0.1:2525")
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
		{"pop3 alice on demo-a", "pop3://localhost:1110/1", "alice:demo", "alice@demo-a"},
		{"imap bob on demo-b", "imap://localhost:1143/INBOX;MAILINDEX=1", "bob:demo", "bob@demo-b"},
		{"https", "https://localhost:8443/owa/", "", "X-Backend: demo-"},
		{"http redirects to https", "http://127.0.0.1:8080/owa/", "", "Location: https://127.0.0.1:8443/owa/"},
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

func allUp(srv *Server) bool {
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
