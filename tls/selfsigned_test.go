package tls

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/pkcs12"
)

// The local CA is generated once and kept: a second Manager on the same
// storage serves the same leaf, and the exported root verifies it for every
// configured name and for loopback clients that send no SNI.
func TestSelfSignedGeneratedOnceAndExported(t *testing.T) {
	storage := t.TempDir()
	c := Certificates{Source: SourceSelfSigned, Names: []string{"mail.example.test", "localhost"}, Storage: storage}

	m := newTestManager(t, c)
	addr := serveTLS(t, m.ServerConfig())
	var root bytes.Buffer
	if err := ExportCA(storage, &root); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(root.Bytes()) {
		t.Fatalf("ExportCA wrote no certificate:\n%s", root.String())
	}
	first := servedLeaf(t, addr, "mail.example.test", roots) // verified by the client
	servedLeaf(t, addr, "localhost", roots)
	noSNI := servedLeaf(t, addr, "", nil)
	if _, err := noSNI.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("no-SNI leaf does not verify for 127.0.0.1: %v", err)
	}
	m.Close()

	// Second start: same storage, same certificate.
	m2 := newTestManager(t, c)
	again := servedLeaf(t, serveTLS(t, m2.ServerConfig()), "mail.example.test", roots)
	if again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("second start served serial %x, want the stored %x", again.SerialNumber, first.SerialNumber)
	}
	m2.Close()

	// A new name gets a new leaf from the same, still trusted, root.
	c.Names = append(c.Names, "imap.example.test")
	m3 := newTestManager(t, c)
	grown := servedLeaf(t, serveTLS(t, m3.ServerConfig()), "imap.example.test", roots)
	if grown.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("names changed but the old leaf is still served")
	}
}

func TestExportCAWithoutCA(t *testing.T) {
	dir := t.TempDir()
	err := ExportCA(dir, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("ExportCA on an empty storage = %v, want an error naming %s", err, dir)
	}
}

// on_renew runs after the local CA issues a certificate, with the files,
// a PFX copy and its password in the environment, and its output logged.
func TestOnRenewCommand(t *testing.T) {
	storage, out := t.TempDir(), filepath.Join(t.TempDir(), "hook.out")
	var logs syncBuffer
	c := Certificates{
		Names:   []string{"mail.example.test"},
		Storage: storage,
		OnRenew: []string{"/bin/sh", "-c", `printf '%s\n' "$GATEHOUSE_CERT_NAMES" "$GATEHOUSE_CERT_FILE" ` +
			`"$GATEHOUSE_KEY_FILE" "$GATEHOUSE_PFX_FILE" "$GATEHOUSE_PFX_PASSWORD" > ` + out + `; echo hook says hi`},
	}
	m, err := NewManager(t.Context(), c, slogTo(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// The command runs in the background, after the start.
	eventually(10*time.Second, func() bool { return strings.Contains(logs.String(), "on_renew command") })

	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("command did not run: %v\nlog:\n%s", err, logs.String())
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 5 || lines[0] != "mail.example.test,127.0.0.1,::1" {
		t.Fatalf("command saw %q", lines)
	}
	pfx, err := os.ReadFile(lines[3])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pkcs12.ToPEM(pfx, lines[4]); err != nil {
		t.Errorf("PFX does not open with GATEHOUSE_PFX_PASSWORD: %v", err)
	}
	if _, err := readPair(CertFile{Cert: lines[1], Key: lines[2]}, time.Now()); err != nil {
		t.Errorf("GATEHOUSE_CERT_FILE/KEY_FILE: %v", err)
	}
	if !strings.Contains(logs.String(), "hook says hi") {
		t.Errorf("command output not logged:\n%s", logs.String())
	}
}

// A failing command is logged and changes nothing else.
func TestOnRenewFailureIsNotFatal(t *testing.T) {
	var logs syncBuffer
	c := Certificates{Storage: t.TempDir(), OnRenew: []string{"/bin/sh", "-c", "echo broken >&2; exit 3"}}
	m, err := NewManager(t.Context(), c, slogTo(&logs))
	if err != nil {
		t.Fatalf("a failing on_renew stopped the start: %v", err)
	}
	defer m.Close()
	eventually(10*time.Second, func() bool { return strings.Contains(logs.String(), "on_renew command") })
	if log := logs.String(); !strings.Contains(log, "on_renew command failed") || !strings.Contains(log, "broken") {
		t.Fatalf("failure not logged with its output:\n%s", log)
	}
}
