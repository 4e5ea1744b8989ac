package tls

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The structs decode from the YAML the root package reads: snake_case keys,
// durations such as "5s", unknown keys refused.
func TestConfigYAML(t *testing.T) {
	doc := `
certificates:
  source: files
  files:
    - {cert: /etc/gatehouse/mail.crt, key: /etc/gatehouse/mail.key}
  default_name: mail.example.com
  reload_interval: 5s
listener:
  mode: starttls
  required: true
  certificates: mail
backend:
  mode: tls
  fingerprint: "AB:CD"
  server_name: exch01.corp.example.com
`
	var cfg struct {
		Certificates Certificates `yaml:"certificates"`
		Listener     Listener     `yaml:"listener"`
		Backend      Backend      `yaml:"backend"`
	}
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	c := cfg.Certificates
	if c.Source != SourceFiles || c.Files[0].Key != "/etc/gatehouse/mail.key" || c.ReloadInterval != 5*time.Second ||
		c.DefaultName != "mail.example.com" {
		t.Errorf("certificates: %+v", c)
	}
	if cfg.Listener != (Listener{Mode: ModeStartTLS, Required: true, Certificates: "mail"}) {
		t.Errorf("listener: %+v", cfg.Listener)
	}
	if cfg.Backend.Fingerprint != "AB:CD" || cfg.Backend.ServerName != "exch01.corp.example.com" {
		t.Errorf("backend: %+v", cfg.Backend)
	}

	dec = yaml.NewDecoder(strings.NewReader("certificates: {source: acme, renew_before: 30d}"))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err == nil {
		t.Error("unknown key renew_before accepted")
	}
}

func TestCertificatesValidate(t *testing.T) {
	files := []CertFile{{Cert: "a.crt", Key: "a.key"}}
	for _, tc := range []struct {
		name string
		c    Certificates
		want string // "" = valid; else a word of the error
	}{
		{"zero value", Certificates{}, ""},
		{"self-signed names", Certificates{Names: []string{"mail.example.test", "192.0.2.1"}}, ""},
		{"default_name not a name", Certificates{Names: []string{"a.test"}, DefaultName: "b.test"}, "default_name"},
		{"unknown source", Certificates{Source: "letsencrypt"}, "source"},
		{"acme", Certificates{Source: SourceACME, Names: []string{"mail.example.com"}, Email: "ops@example.com"}, ""},
		{"acme agree without email", Certificates{Source: SourceACME, Names: []string{"mail.example.com"}, AgreeTerms: true}, ""},
		{"acme no names", Certificates{Source: SourceACME, Email: "ops@example.com"}, "names"},
		{"acme no email", Certificates{Source: SourceACME, Names: []string{"mail.example.com"}}, "email"},
		{"acme wildcard", Certificates{Source: SourceACME, Names: []string{"*.example.com"}, Email: "o@example.com"}, "wildcard"},
		{"acme http ca", Certificates{Source: SourceACME, Names: []string{"m.example.com"}, Email: "o@example.com", CA: "http://ca/dir"}, "ca"},
		{"acme challenge", Certificates{Source: SourceACME, Names: []string{"m.example.com"}, Email: "o@example.com", Challenges: []string{"dns-01"}}, "challenges"},
		{"acme with files", Certificates{Source: SourceACME, Names: []string{"m.example.com"}, Email: "o@example.com", Files: files}, "files"},
		{"files", Certificates{Source: SourceFiles, Files: files}, ""},
		{"files none", Certificates{Source: SourceFiles}, "files"},
		{"files without key", Certificates{Source: SourceFiles, Files: []CertFile{{Cert: "a.crt"}}}, "files[0]"},
		{"files with names", Certificates{Source: SourceFiles, Files: files, Names: []string{"a.test"}}, "names"},
		{"files with email", Certificates{Source: SourceFiles, Files: files, Email: "o@example.com"}, "email"},
		{"files with on_renew", Certificates{Source: SourceFiles, Files: files, OnRenew: []string{"true"}}, "on_renew"},
		{"files negative interval", Certificates{Source: SourceFiles, Files: files, ReloadInterval: -time.Second}, "reload_interval"},
		{"self-signed with ca", Certificates{CA: "https://acme.example/dir"}, "ca"},
		{"self-signed bad name", Certificates{Names: []string{"mail example"}}, "names"},
	} {
		err := tc.c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
}
