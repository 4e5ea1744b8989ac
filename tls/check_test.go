package tls

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CheckFiles finds, with the key at fault, each problem that makes
// NewManager refuse a set of files, and nothing in a set it accepts.
func TestCheckFilesAgreesWithNewManager(t *testing.T) {
	ca, dir := newTestCA(t, "check CA"), t.TempDir()
	good := writePair(t, dir, "good", ca.issue(t, "a.example.test"))
	stranger := writePair(t, dir, "stranger", ca.issue(t, "a.example.test"))
	old := ca.issueValid(t, ca.key, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour), "old.example.test")
	expired := writePair(t, dir, "expired", old)
	notPEM := filepath.Join(dir, "not.pem")
	writeFile(t, notPEM, []byte("not a certificate\n"))
	missing := filepath.Join(dir, "missing.crt")

	for _, tc := range []struct {
		name    string
		set     Certificates
		wantKey string // "" means no problem
		wantErr string
	}{
		{"good", Certificates{Files: []CertFile{good}}, "", ""},
		{"missing certificate", Certificates{Files: []CertFile{good, {Cert: missing, Key: good.Key}}}, "files[1].cert", missing},
		{"missing key", Certificates{Files: []CertFile{{Cert: good.Cert, Key: missing}}}, "files[0].key", missing},
		{"key of another certificate", Certificates{Files: []CertFile{{Cert: good.Cert, Key: stranger.Key}}}, "files[0].key", "does not match"},
		{"expired", Certificates{Files: []CertFile{expired}}, "files[0].cert", "expired"},
		{"no PEM in the certificate file", Certificates{Files: []CertFile{{Cert: notPEM, Key: good.Key}}}, "files[0].cert", notPEM},
		{"default name held by none", Certificates{Files: []CertFile{good}, DefaultName: "b.example.test"}, "default_name", "b.example.test"},
		{"ca_root missing", Certificates{Source: SourceACME, Names: []string{"a.example.test"}, AgreeTerms: true,
			CA: "https://127.0.0.1:1/dir", CARoot: missing}, "ca_root", missing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.set.Source == "" {
				tc.set.Source = SourceFiles
			}
			tc.set.Storage = t.TempDir()
			probs := tc.set.CheckFiles(time.Now())
			if tc.wantKey == "" {
				if len(probs) != 0 {
					t.Fatalf("problems in a good set: %v", probs)
				}
				newTestManager(t, tc.set) // and NewManager agrees
				return
			}
			if len(probs) != 1 || probs[0].Key != tc.wantKey || !strings.Contains(probs[0].Err.Error(), tc.wantErr) {
				t.Fatalf("problems %v, want one at %s mentioning %q", probs, tc.wantKey, tc.wantErr)
			}
			if tc.set.Source == SourceFiles || tc.set.CARoot != "" {
				if m, err := newManagerOnly(t, tc.set); err == nil {
					m.Close()
					t.Errorf("NewManager accepted what CheckFiles refuses")
				}
			}
		})
	}
}

// newManagerOnly builds a Manager without starting ACME ordering: for
// acme sets it stops at the setup that reads ca_root.
func newManagerOnly(t *testing.T, c Certificates) (*Manager, error) {
	t.Helper()
	if c.Source == SourceACME {
		return newManager(c, testLog(t))
	}
	return NewManager(t.Context(), c, testLog(t))
}

// A missing back-end CA file is reported at ca_file, as ClientConfig
// refuses it; a fingerprint or mode none reads no file.
func TestBackendCheckFiles(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "ca.pem")
	b := Backend{Mode: ModeTLS, CAFile: missing}
	p := b.CheckFiles()
	if p == nil || p.Key != "ca_file" || !errors.Is(p, fs.ErrNotExist) {
		t.Fatalf("CheckFiles = %v, want ca_file: not exist", p)
	}
	if _, err := b.ClientConfig("", testLog(t)); err == nil {
		t.Error("ClientConfig accepted what CheckFiles refuses")
	}
	ca := newTestCA(t, "backend CA")
	writeFile(t, missing, ca.pem)
	if p := b.CheckFiles(); p != nil {
		t.Errorf("a readable CA file: %v", p)
	}
	if p := (Backend{}).CheckFiles(); p != nil {
		t.Errorf("mode none: %v", p)
	}
}

// A self-signed or acme set whose storage cannot be created (here: a
// regular file stands where a directory must be) is refused by CheckFiles
// as NewManager refuses it, so `validate` no longer calls ok a file `run`
// cannot start; a storage directory that does not exist yet is fine.
func TestCheckFilesStorage(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeFile(t, file, []byte("not a directory\n"))
	blocked := Certificates{Source: SourceSelfSigned, Names: []string{"localhost"}, Storage: filepath.Join(file, "certificates")}
	probs := blocked.CheckFiles(time.Now())
	if len(probs) != 1 || probs[0].Key != "storage" || !strings.Contains(probs[0].Err.Error(), file) {
		t.Fatalf("problems %v, want one at storage naming %s", probs, file)
	}
	if m, err := newManagerOnly(t, blocked); err == nil {
		m.Close()
		t.Errorf("NewManager accepted what CheckFiles refuses")
	}
	acme := Certificates{Source: SourceACME, Names: []string{"a.example.test"}, AgreeTerms: true,
		CA: "https://127.0.0.1:1/dir", Storage: blocked.Storage}
	if probs := acme.CheckFiles(time.Now()); len(probs) != 1 || probs[0].Key != "storage" {
		t.Errorf("acme set: problems %v, want one at storage", probs)
	}
	fresh := Certificates{Source: SourceSelfSigned, Names: []string{"localhost"}, Storage: filepath.Join(dir, "state", "certificates")}
	if probs := fresh.CheckFiles(time.Now()); len(probs) != 0 {
		t.Fatalf("problems in a storage yet to be created: %v", probs)
	}
	newTestManager(t, fresh)
}
