package smtp

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// swaks runs the swaks client against addr with args and returns its
// transcript and exit status.
func swaks(t *testing.T, addr string, args ...string) (string, int) {
	t.Helper()
	bin := wiretest.NeedTool(t, "swaks", "swaks")
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	base := []string{"--server", host, "--port", port, "--timeout", "10", "--ehlo", "client.example",
		"--from", "alice@example.org", "--to", "bob@example.net", "--header", "Subject: swaks"}
	out, err := exec.CommandContext(ctx, bin, append(base, args...)...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	case err != nil:
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	return string(out), 0
}

// swaks, a real SMTP client, sends through gatehouse with STARTTLS (and
// implicit TLS) and AUTH PLAIN and LOGIN; the back-end checks the
// credentials and records the user.
func TestIntegrationSwaks(t *testing.T) {
	backends, addrs := mtas(t, 1, func(s *smtptest.Server) { s.AuthUsers = map[string]string{"alice": "secret"} })
	starttls := newFrontend(addrs...)
	starttls.TLSMode, starttls.EdgeTLS, starttls.TLSRequired = proxy.TLSStartTLS, wiretest.ServerTLS(), true
	starttls.Config.Auth = AuthRelay
	submission, _ := serve(t, starttls)
	implicit := newFrontend(addrs...)
	implicit.TLSMode, implicit.EdgeTLS = proxy.TLSImplicit, wiretest.ServerTLS()
	implicit.Config.Auth = AuthRelay
	smtps, _ := serve(t, implicit)

	for _, tc := range []struct {
		name string
		addr string
		args []string
	}{
		{"starttls plain", submission, []string{"--tls", "--auth", "PLAIN"}},
		{"starttls login", submission, []string{"--tls", "--auth", "LOGIN"}},
		{"implicit tls plain", smtps, []string{"--tls-on-connect", "--auth", "PLAIN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(backends[0].Messages())
			out, code := swaks(t, tc.addr, append(tc.args, "--auth-user", "alice", "--auth-password", "secret")...)
			if code != 0 || !strings.Contains(out, "235 2.0.0") || !strings.Contains(out, "250 2.0.0 OK: queued") {
				t.Fatalf("swaks exited %d:\n%s", code, out)
			}
			msgs := backends[0].Messages()
			if len(msgs) != before+1 || msgs[len(msgs)-1].User != "alice" || !strings.Contains(string(msgs[len(msgs)-1].Data), "Subject: swaks") {
				t.Fatalf("back-end got %+v", msgs)
			}
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		out, code := swaks(t, submission, "--tls", "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "guess")
		if code == 0 || !strings.Contains(out, "535 5.7.8 Authentication credentials invalid") {
			t.Fatalf("swaks exited %d:\n%s", code, out)
		}
	})
	t.Run("auth before tls", func(t *testing.T) {
		out, code := swaks(t, submission, "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "secret")
		if code == 0 || strings.Contains(out, "235 ") {
			t.Fatalf("swaks authenticated without TLS (exit %d):\n%s", code, out)
		}
	})
}
