package main

import (
	"bufio"
	"bytes"
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
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
)

// validate runs `gatehouse validate args...` and returns its exit code,
// standard output and standard error.
func validate(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = cmdValidate(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

// imapConfig is a file with an imap listener on port 1143 that serves the
// certificate pair with tls mode starttls and routes by the map file.
func imapConfig(cert, key, mapFile string) string {
	return fmt.Sprintf(`admin: {listen: "off"}
certificates:
  default:
    source: files
    files:
      - cert: %s
        key: %s
backends:
  imap1: {address: 127.0.0.1}
listeners:
  - name: imap
    protocol: imap
    listen: 127.0.0.1:1143
    backends: [imap1]
    tls: {mode: starttls}
    route: {by: map, file: %s}
`, cert, key, mapFile)
}

// `gatehouse validate FILE` refuses each case that `run` refuses, with one
// FILE:LINE:COL: line per root cause, and only warns of what run serves.
func TestValidateRefusesWhatRunRefuses(t *testing.T) {
	dir := t.TempDir()
	cert, key := wiretest.CertFiles(t, dir, "good", time.Now().Add(24*time.Hour), "mail.example.org")
	_, otherKey := wiretest.CertFiles(t, dir, "other", time.Now().Add(24*time.Hour), "mail.example.org")
	mapFile := writeFile(t, filepath.Join(dir, "users.map"), "alice imap1\n")
	missing := filepath.Join(dir, "missing")
	good := imapConfig(cert, key, mapFile)
	for _, tc := range []struct {
		name, yaml string
		code       int
		want       []string // one per line of standard error
	}{
		{"missing certificate file", imapConfig(missing, key, mapFile), 1,
			[]string{":6:15: certificates default: tls: files: open " + missing}},
		{"key not matching its certificate", imapConfig(cert, otherKey, mapFile), 1,
			[]string{":7:14: certificates default: tls: files: key " + otherKey, "does not match"}},
		{"missing map file", imapConfig(cert, key, missing), 1,
			[]string{":16:28: route: map file: open " + missing}},
		{"indentation error", strings.Replace(good, "    backends: [imap1]", "   backends: [imap1]", 1), 1,
			[]string{":14:4: did not find expected '-' indicator: check this line's indentation"}},
		{"wrong protocol", strings.Replace(good, "protocol: imap", "protocol: imap4", 1), 1,
			[]string{":12:15: protocol: unknown value \"imap4\""}},
		{"a typo and another error", strings.Replace(strings.Replace(good, "backends: [imap1]", "backend: [imap1]", 1),
			"{mode: starttls}", "{mode: startls}", 1), 1,
			[]string{`:14:5: unknown key "backend" in listeners[0] (did you mean "backends"?)`, `:15:17: tls: mode "startls"`}},
		{"starttls on 993", strings.Replace(good, "1143", "993", 1), 0,
			[]string{":15:17: warning: tls: starttls on port 993"}},
		{"unresolvable back-end", strings.Replace(good, "{address: 127.0.0.1}", "{address: imap1.example.invalid}", 1), 0,
			[]string{":9:20: warning: back-end imap1: imap1.example.invalid does not resolve"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(t.TempDir(), "gatehouse.yaml"), tc.yaml)
			code, _, stderr := validate(path)
			if code != tc.code {
				t.Errorf("exit %d, want %d; standard error:\n%s", code, tc.code, stderr)
			}
			if lines := strings.Count(stderr, "\n"); lines != len(tc.want) && tc.name != "key not matching its certificate" {
				t.Errorf("%d lines, want %d:\n%s", lines, len(tc.want), stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("standard error lacks %q:\n%s", w, stderr)
				}
			}
			if !strings.HasPrefix(stderr, path+":") {
				t.Errorf("problems do not start with the file's name:\n%s", stderr)
			}
		})
	}
	path := writeFile(t, filepath.Join(dir, "good.yaml"), good)
	if code, stdout, stderr := validate(path); code != 0 || stdout != path+": ok\n" || stderr != "" {
		t.Errorf("a good file: exit %d, %q, %q", code, stdout, stderr)
	}
}

// The file is the argument, as in the systemd unit, or -config's value;
// flags go before or after it; two files are a usage error.
func TestValidateReadsTheFileGiven(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, filepath.Join(dir, "good.yaml"),
		"admin: {listen: \"off\"}\nbackends: {a: {address: 127.0.0.1}}\nlisteners: [{name: l, listen: '127.0.0.1:0', port: 1, backends: [a]}]\n")
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), "listeners: [{name: a, listen: ':25', backends: [nope]}]\n")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{good}, 0, good + ": ok"},
		{[]string{bad}, 1, bad + ":1:"},
		{[]string{"-config", good}, 0, good + ": ok"},
		{[]string{"-config", bad}, 1, bad + ":1:"},
		{[]string{"-offline", good}, 0, good + ": ok"},
		{[]string{bad, "-offline"}, 1, bad + ":1:"},
		{[]string{good, bad}, 2, "one file"},
		{[]string{"-config", good, bad}, 2, "one file"},
		{[]string{filepath.Join(dir, "none.yaml")}, 1, "none.yaml: no such file"},
	} {
		code, stdout, stderr := validate(tc.args...)
		if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
			t.Errorf("validate %v: exit %d (want %d), output %q lacks %q", tc.args, code, tc.code, stdout+stderr, tc.want)
		}
	}
}

// The shipped examples name certificate and map files of the machine they
// are written for: -offline checks them anyway; without it they are
// refused here, and pass once the files they name exist.
func TestValidateShippedExamples(t *testing.T) {
	examples, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(examples) < 3 {
		t.Fatalf("examples: %v %v", examples, err)
	}
	for _, path := range examples {
		if code, _, stderr := validate("-offline", path); code != 0 {
			t.Errorf("validate -offline %s: exit %d\n%s", path, code, stderr)
		}
	}
	const postfix = "../../examples/postfix-dovecot.yaml"
	code, _, stderr := validate(postfix)
	if code != 1 || !strings.Contains(stderr, "/etc/ssl/mail.example.org.pem") || !strings.Contains(stderr, "/etc/gatehouse/mailboxes.map") {
		t.Errorf("validate %s without its files: exit %d\n%s", postfix, code, stderr)
	}
	text, err := os.ReadFile(postfix)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key := wiretest.CertFiles(t, dir, "mail", time.Now().Add(24*time.Hour), "mail.example.org")
	mapFile := writeFile(t, filepath.Join(dir, "mailboxes.map"), "alice@example.org imap1\n@example.org imap2\n")
	provided := strings.NewReplacer("/etc/ssl/mail.example.org.pem", cert,
		"/etc/ssl/private/mail.example.org.key", key, "/etc/gatehouse/mailboxes.map", mapFile).Replace(string(text))
	path := writeFile(t, filepath.Join(dir, "postfix-dovecot.yaml"), provided)
	if code, _, stderr := validate(path); code != 0 || stderr != "" {
		t.Errorf("validate %s with its files: exit %d\n%s", postfix, code, stderr)
	}
}

// `gatehouse run` refuses, before it binds, what validate refuses; a
// reload refuses it too and logs the line and column.
func TestRunAndReloadUseTheChecker(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.crt")
	_, key := wiretest.CertFiles(t, dir, "good", time.Now().Add(24*time.Hour), "mail.example.org")
	mapFile := writeFile(t, filepath.Join(dir, "users.map"), "alice imap1\n")
	broken := writeFile(t, filepath.Join(dir, "broken.yaml"), imapConfig(missing, key, mapFile))
	if code := run([]string{"run", "-config", broken}); code != 1 {
		t.Errorf("run with a missing certificate file: exit %d", code)
	}

	mx := smtptest.NewServer("mx1")
	defer mx.Close()
	path := filepath.Join(dir, "gatehouse.yaml")
	writeFile(t, path, fmt.Sprintf("admin: {listen: \"off\"}\nlog: {level: error}\nbackends: {mx1: {address: %q}}\nlisteners:\n  - name: smtp\n    listen: \"127.0.0.1:0\"\n    backends: [mx1]\n", mx.Addr))
	srv := startFromFile(t, path)
	defer srv.Close()
	text, _ := os.ReadFile(broken)
	writeFile(t, path, string(text))
	var logged bytes.Buffer
	if err := reloadFile(srv, path, slog.New(slog.NewTextHandler(&logged, nil))); err == nil {
		t.Fatal("a file naming a missing certificate was applied")
	}
	if want := path + ":6:15: certificates default: tls: files: open " + missing; !strings.Contains(logged.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, logged.String())
	}
}

// startFromFile serves the configuration file at path.
func startFromFile(t *testing.T, path string) *gatehouse.Server {
	t.Helper()
	cfg, err := config.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gatehouse.NewServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	return srv
}

// The systemd unit validates the file before it signals a reload, with
// the file that ExecStart serves, so `systemctl reload` fails for a file
// gatehouse refuses and the running configuration stays.
func TestSystemdUnitValidatesBeforeReload(t *testing.T) {
	unit := readUnit(t, "../../examples/systemd/gatehouse.service")
	start := strings.Fields(unit["ExecStart"][0])
	config := flagValue(start, "-config")
	reloads := unit["ExecReload"]
	if len(reloads) != 2 {
		t.Fatalf("ExecReload lines %q, want validate then the signal", reloads)
	}
	check := strings.Fields(reloads[0])
	if check[0] != start[0] || len(check) != 3 || check[1] != "validate" || check[2] != config {
		t.Errorf("first ExecReload %q, want %s validate %s", reloads[0], start[0], config)
	}
	if reloads[1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("second ExecReload %q, want the SIGHUP", reloads[1])
	}
	// The validate line, run as written on a file gatehouse refuses, fails.
	bad := writeFile(t, filepath.Join(t.TempDir(), "gatehouse.yaml"), "listeners: [{name: a, listen: ':25', backends: [nope]}]\n")
	if code := run(append(check[1:2], bad)); code != 1 {
		t.Errorf("%s on a bad file: exit %d", reloads[0], code)
	}
}

// readUnit returns the [Service] settings of a systemd unit file, every
// value of each key in order.
func readUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string][]string{}
	section := ""
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, _ := strings.Cut(line, "=")
			settings[k] = append(settings[k], v)
		}
	}
	return settings
}

// flagValue returns the word after name in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
