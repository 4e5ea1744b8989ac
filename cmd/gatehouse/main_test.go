package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse"
	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/pop3/pop3test"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
)

// `gatehouse probe` follows the Nagios plugin convention: exit 0 and an OK
// line with performance data for a live service, 2 and CRITICAL naming the
// failed stage for a dead one, 3 for nonsense.
func TestProbeNagios(t *testing.T) {
	s := smtptest.NewServer("mx1")
	defer s.Close()
	p := pop3test.NewServer("pop1")
	defer p.Close()
	for _, tt := range []struct {
		url      string
		code     int
		contains []string
	}{
		{"smtp://" + s.Addr, 0, []string{"SMTP OK - " + s.Addr, "| time="}},
		{"pop3://" + p.Addr, 0, []string{"POP3 OK"}},
		{"smtp://" + wiretest.FreeAddr(t), 2, []string{"SMTP CRITICAL", "connect"}},
		{"gopher://" + s.Addr, 3, []string{"UNKNOWN", "unknown scheme"}},
	} {
		var out bytes.Buffer
		code := cmdProbe([]string{"-format", "nagios", "-timeout", "2s", tt.url}, &out)
		if code != tt.code {
			t.Errorf("%s: exit %d, want %d (%s)", tt.url, code, tt.code, out.String())
		}
		for _, want := range tt.contains {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: output %q lacks %q", tt.url, out.String(), want)
			}
		}
		if lines := strings.Count(out.String(), "\n"); lines != 1 {
			t.Errorf("%s: %d lines, a plugin prints one", tt.url, lines)
		}
	}
}

// A back-end that accepts and never greets fails at the timeout with the
// stage named, in JSON too.
func TestProbeJSONHangingServer(t *testing.T) {
	s := smtptest.NewUnstartedServer("tarpit")
	s.Hang = true
	s.Start()
	defer s.Close()
	var out bytes.Buffer
	start := time.Now()
	code := cmdProbe([]string{"-format", "json", "-timeout", "300ms", "smtp://" + s.Addr}, &out)
	if code != 2 || time.Since(start) > 2*time.Second {
		t.Fatalf("exit %d after %s", code, time.Since(start))
	}
	var r probeResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("not JSON: %q", out.String())
	}
	if r.OK || r.Stage != "timeout" || r.Kind != "smtp" {
		t.Errorf("result = %+v", r)
	}
}

// -warning turns a slow success into WARNING (exit 1).
func TestProbeWarning(t *testing.T) {
	s := smtptest.NewServer("mx1")
	defer s.Close()
	var out bytes.Buffer
	if code := cmdProbe([]string{"-format", "nagios", "-warning", "1ns", "smtp://" + s.Addr}, &out); code != 1 || !strings.Contains(out.String(), "SMTP WARNING") {
		t.Errorf("exit %d: %s", code, out.String())
	}
}

// A broken file on reload is refused with file:line:col for each problem,
// and the running configuration goes on serving.
func TestReloadRefusesBrokenFile(t *testing.T) {
	mx := smtptest.NewServer("mx1")
	defer mx.Close()
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	good := fmt.Sprintf("admin: {listen: \"off\"}\nlog: {level: error}\nbackends: {mx1: {address: %q}}\nlisteners:\n  - name: smtp\n    listen: \"127.0.0.1:0\"\n    backends: [mx1]\n", mx.Addr)
	os.WriteFile(path, []byte(good), 0o644)
	cfg, err := config.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gatehouse.NewServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Close()
	os.WriteFile(path, []byte(good+"    timeouts: {idle: forever}\n  - {name: x, lisen: 1}\n"), 0o644)
	var logged bytes.Buffer
	err = reloadFile(srv, path, slog.New(slog.NewTextHandler(&logged, nil)))
	if err == nil {
		t.Fatal("a broken file was applied")
	}
	for _, want := range []string{path + ":8:22: bad duration", path + ":9:15: unknown key", "reload refused"} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logged.String())
		}
	}
	var out bytes.Buffer
	if code := cmdProbe([]string{"-format", "nagios", "smtp://" + srv.Addrs()["smtp"][0]}, &out); code != 0 {
		t.Errorf("the running configuration stopped serving: %s", out.String())
	}
}

func TestValidateAndVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("listeners: [{name: a, listen: ':25', backends: [nope]}]\n"), 0o644)
	if code := run([]string{"validate", "-config", path}); code != 1 {
		t.Errorf("validate of a bad file: exit %d", code)
	}
	if code := run([]string{"validate", "-offline", "-config", "../../examples/exchange.yaml"}); code != 0 {
		t.Errorf("examples/exchange.yaml does not validate")
	}
	if code := run([]string{"version"}); code != 0 {
		t.Errorf("version: exit %d", code)
	}
}
