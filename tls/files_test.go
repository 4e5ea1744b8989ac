package tls

import (
	"bufio"
	stdtls "crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Two certificate files at once: the client's SNI picks the certificate,
// and clients without SNI (or with a name nobody holds) get the first one.
func TestFilesChosenBySNI(t *testing.T) {
	ca, dir := newTestCA(t, "files CA"), t.TempDir()
	a := writePair(t, dir, "a", ca.issue(t, "a.example.test"))
	b := writePair(t, dir, "b", ca.issue(t, "b.example.test", "mx.example.test"))
	m := newTestManager(t, Certificates{Source: SourceFiles, Files: []CertFile{a, b}, Storage: t.TempDir()})
	addr := serveTLS(t, m.ServerConfig())

	// An MTA that sends no SNI gets the first certificate.
	if got := servedLeaf(t, addr, "", nil); got.Subject.CommonName != "a.example.test" {
		t.Errorf("no SNI: served %s, want a.example.test", got.Subject.CommonName)
	}
	for sni, want := range map[string]string{
		"a.example.test":     "a.example.test",
		"b.example.test":     "b.example.test",
		"mx.example.test":    "b.example.test",
		"MX.EXAMPLE.TEST":    "b.example.test", // names are case-insensitive
		"other.example.test": "a.example.test", // nobody holds it: the default
		"sub.a.example.test": "a.example.test",
	} {
		cs, err := dialTLS(addr, &stdtls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("SNI %s: %v", sni, err)
		}
		if got := cs.PeerCertificates[0].Subject.CommonName; got != want {
			t.Errorf("SNI %s: served %s, want %s", sni, got, want)
		}
	}
}

// default_name chooses what clients without SNI get.
func TestFilesDefaultName(t *testing.T) {
	ca, dir := newTestCA(t, "files CA"), t.TempDir()
	a := writePair(t, dir, "a", ca.issue(t, "a.example.test"))
	b := writePair(t, dir, "b", ca.issue(t, "b.example.test", "mx.example.test"))
	c := Certificates{Source: SourceFiles, Files: []CertFile{a, b}, DefaultName: "mx.example.test", Storage: t.TempDir()}
	m := newTestManager(t, c)
	if got := servedLeaf(t, serveTLS(t, m.ServerConfig()), "", nil); got.Subject.CommonName != "b.example.test" {
		t.Fatalf("no SNI: served %s, want the certificate holding mx.example.test", got.Subject.CommonName)
	}

	c.DefaultName = "nowhere.example.test"
	if _, err := NewManager(t.Context(), c, testLog(t)); err == nil || !strings.Contains(err.Error(), "nowhere.example.test") {
		t.Fatalf("default_name held by no file: err = %v", err)
	}
}

// A replaced file is picked up by the poll; new handshakes get the new
// certificate while a session opened before the change goes on.
func TestFilesReloadedWhenChanged(t *testing.T) {
	ca, dir := newTestCA(t, "files CA"), t.TempDir()
	a := writePair(t, dir, "a", ca.issue(t, "a.example.test"))
	c := Certificates{Source: SourceFiles, Files: []CertFile{a}, ReloadInterval: 20 * time.Millisecond, Storage: t.TempDir()}
	m := newTestManager(t, c)
	addr := serveTLS(t, m.ServerConfig())
	before := servedLeaf(t, addr, "a.example.test", ca.pool())

	old, oldR := openSession(t, addr, ca)
	renewed := ca.issue(t, "a.example.test")
	writePair(t, dir, "a", renewed)

	if !eventually(5*time.Second, func() bool {
		return servedLeaf(t, addr, "a.example.test", ca.pool()).SerialNumber.Cmp(renewed.Leaf.SerialNumber) == 0
	}) {
		t.Fatalf("still serving serial %x after the file changed", before.SerialNumber)
	}
	// The session that began before the reload still works.
	old.SetDeadline(time.Now().Add(ioTimeout))
	io.WriteString(old, "ping\n")
	if line, err := oldR.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("old session after reload: %q, %v", line, err)
	}
}

// Reload picks up a change at once, and a broken replacement leaves the
// previous certificate in service and names the file at fault.
func TestFilesExplicitReload(t *testing.T) {
	ca, dir := newTestCA(t, "files CA"), t.TempDir()
	a := writePair(t, dir, "a", ca.issue(t, "a.example.test"))
	c := Certificates{Source: SourceFiles, Files: []CertFile{a}, ReloadInterval: time.Hour, Storage: t.TempDir()}
	m := newTestManager(t, c)
	addr := serveTLS(t, m.ServerConfig())

	renewed := ca.issue(t, "a.example.test")
	writePair(t, dir, "a", renewed)
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := servedLeaf(t, addr, "a.example.test", ca.pool()); got.SerialNumber.Cmp(renewed.Leaf.SerialNumber) != 0 {
		t.Fatal("Reload did not serve the new certificate")
	}

	// A key that belongs to another certificate.
	other := writePair(t, t.TempDir(), "other", ca.issue(t, "a.example.test"))
	key, _ := os.ReadFile(other.Key)
	writeFile(t, a.Key, key)
	err := m.Reload()
	if err == nil || !strings.Contains(err.Error(), a.Key) {
		t.Fatalf("Reload with a mismatched key = %v, want an error naming %s", err, a.Key)
	}
	if got := servedLeaf(t, addr, "a.example.test", ca.pool()); got.SerialNumber.Cmp(renewed.Leaf.SerialNumber) != 0 {
		t.Fatal("a failed reload replaced the certificate in service")
	}
}

// Startup refuses files it could not serve, naming the file.
func TestFilesStartupErrors(t *testing.T) {
	ca, dir := newTestCA(t, "files CA"), t.TempDir()
	good := writePair(t, dir, "good", ca.issue(t, "a.example.test"))
	stranger := writePair(t, dir, "stranger", ca.issue(t, "a.example.test"))
	mismatched := CertFile{Cert: good.Cert, Key: stranger.Key}
	old := ca.issueValid(t, ca.key, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour), "old.example.test")
	expiredPair := writePair(t, dir, "expired", old)
	missing := CertFile{Cert: filepath.Join(dir, "missing.crt"), Key: good.Key}

	for _, tc := range []struct {
		name  string
		files []CertFile
		want  []string
	}{
		{"key of another certificate", []CertFile{mismatched}, []string{stranger.Key, "does not match"}},
		{"expired", []CertFile{good, expiredPair}, []string{expiredPair.Cert, "expired"}},
		{"missing", []CertFile{missing}, []string{missing.Cert}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Certificates{Source: SourceFiles, Files: tc.files, Storage: t.TempDir()}
			m, err := NewManager(t.Context(), c, testLog(t))
			if err == nil {
				m.Close()
				t.Fatal("NewManager accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// openSession opens a TLS session that stays open, past the greeting.
func openSession(t *testing.T, addr string, ca *testCA) (*stdtls.Conn, *bufio.Reader) {
	t.Helper()
	c, err := stdtls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", addr,
		&stdtls.Config{ServerName: "a.example.test", RootCAs: ca.pool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioTimeout))
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
	return c, r
}
