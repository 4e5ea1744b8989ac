package gatehouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/miekg/dns"
)

func writeTestFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkFixture is a directory with a good certificate pair, a second
// pair, an expired one and a good map file.
type checkFixture struct {
	dir                     string
	cert, key, otherKey     string
	oldCert, oldKey         string
	mapFile, missing, state string
}

func newCheckFixture(t *testing.T) checkFixture {
	f := checkFixture{dir: t.TempDir()}
	f.cert, f.key = wiretest.CertFiles(t, f.dir, "good", time.Now().Add(24*time.Hour))
	_, f.otherKey = wiretest.CertFiles(t, f.dir, "other", time.Now().Add(24*time.Hour))
	f.oldCert, f.oldKey = wiretest.CertFiles(t, f.dir, "old", time.Now().Add(-time.Hour))
	f.mapFile = filepath.Join(f.dir, "users.map")
	writeTestFile(t, f.mapFile, []byte("alice a\n"))
	f.missing = filepath.Join(f.dir, "missing")
	f.state = filepath.Join(f.dir, "state")
	return f
}

// config is a file with one pop3 listener serving the certificate pair
// and routing by the map file given, on 127.0.0.1:0.
func (f checkFixture) config(cert, key, mapFile string) string {
	return fmt.Sprintf(`state_dir: %q
admin: {listen: "off"}
certificates:
  default:
    source: files
    files:
      - {cert: %q, key: %q}
backends:
  a: {address: 127.0.0.1}
listeners:
  - name: pop3
    protocol: pop3
    listen: 127.0.0.1:0
    port: 1
    backends: [a]
    tls: {mode: starttls}
    route: {by: map, file: %q}
`, f.state, cert, key, mapFile)
}

// Check refuses each file NewServer cannot use, at the line and column of
// the key naming it; NewServer refuses the same configuration, so
// `validate` says no exactly where `run` would fail.
func TestCheckRefusesWhatRunRefuses(t *testing.T) {
	f := newCheckFixture(t)
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"missing certificate file", f.config(f.missing, f.key, f.mapFile),
			"x.yaml:7:16: certificates default: tls: files: open " + f.missing},
		{"key not matching its certificate", f.config(f.cert, f.otherKey, f.mapFile),
			"x.yaml:7:" + fmt.Sprint(16+len(fmt.Sprintf("%q", f.cert))+7) + ": certificates default: tls: files: key " + f.otherKey},
		{"expired certificate", f.config(f.oldCert, f.oldKey, f.mapFile),
			"x.yaml:7:16: certificates default: tls: files: certificate " + f.oldCert + " expired"},
		{"missing map file", f.config(f.cert, f.key, f.missing),
			"x.yaml:17:28: route: map file: open " + f.missing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse("x.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatalf("the text alone is fine, yet: %v", err)
			}
			errs, _ := cfg.Check(t.Context(), config.CheckOptions{})
			if len(errs) != 1 || !strings.Contains(errs.Error(), tc.want) {
				t.Errorf("Check:\n%v\nwant one problem containing %s", errs, tc.want)
			}
			if offline, _ := cfg.Check(t.Context(), config.CheckOptions{Offline: true}); len(offline) != 0 {
				t.Errorf("offline, Check read files: %v", offline)
			}
			if srv, err := NewServer(cfg, slog.New(slog.DiscardHandler)); err == nil {
				srv.Close()
				t.Error("NewServer accepted what Check refuses")
			}
		})
	}
}

// With every file in place Check finds nothing and NewServer starts: the
// checker is not stricter than run.
func TestCheckAcceptsWhatRunAccepts(t *testing.T) {
	f := newCheckFixture(t)
	path := filepath.Join(f.dir, "gatehouse.yaml")
	writeTestFile(t, path, []byte(f.config(f.cert, f.key, f.mapFile)))
	cfg, warnings, err := config.Load(t.Context(), path, config.CheckOptions{})
	if err != nil || len(warnings) != 0 {
		t.Fatalf("Load: %v, warnings %v", err, warnings)
	}
	srv, err := NewServer(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
}

// A certificate set that nothing serves is not started by run, so its
// files are not checked either.
func TestCheckSkipsUnusedCertificateSets(t *testing.T) {
	f := newCheckFixture(t)
	cfg, err := config.Parse("x.yaml", []byte(strings.Replace(f.config(f.missing, f.key, f.mapFile),
		"tls: {mode: starttls}", "tls: {mode: none}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if errs, _ := cfg.Check(t.Context(), config.CheckOptions{}); len(errs) != 0 {
		t.Errorf("an unused set was checked: %v", errs)
	}
}

// A back-end CA file that does not exist is refused at backend_tls.ca_file.
func TestCheckRefusesMissingBackendCAFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "ca.pem")
	cfg, err := config.Parse("x.yaml", []byte(fmt.Sprintf(`admin: {listen: "off"}
backends: {a: {address: 127.0.0.1}}
listeners:
  - name: l
    listen: 127.0.0.1:0
    port: 1
    backends: [a]
    backend_tls: {mode: tls, ca_file: %q}
`, missing)))
	if err != nil {
		t.Fatal(err)
	}
	errs, _ := cfg.Check(t.Context(), config.CheckOptions{})
	if want := "x.yaml:8:39: backend_tls: open " + missing; len(errs) != 1 || !strings.Contains(errs.Error(), want) {
		t.Errorf("Check:\n%v\nwant %s", errs, want)
	}
}

// A TLS mode the port's clients do not expect is a warning, not an error,
// at the mode's line and column, offline too.
func TestCheckWarnsOfTLSModeUnusualForPort(t *testing.T) {
	cfg, err := config.Parse("x.yaml", []byte(`admin: {listen: "off"}
backends: {a: {address: 127.0.0.1}}
listeners:
  - name: implicit-ports
    protocol: imap
    listen: [127.0.0.1:465, 127.0.0.1:993, 127.0.0.1:995]
    port: 1
    backends: [a]
    tls: {mode: starttls}
  - name: plain-ports
    protocol: smtp
    listen: [127.0.0.1:25, 127.0.0.1:587, 127.0.0.1:110, 127.0.0.1:143]
    port: 1
    backends: [a]
    tls: {mode: implicit}
  - name: usual
    protocol: smtp
    listen: [127.0.0.2:465, 127.0.0.2:993]
    port: 1
    backends: [a]
    tls: {mode: implicit}
`))
	if err != nil {
		t.Fatal(err)
	}
	errs, warnings := cfg.Check(t.Context(), config.CheckOptions{Offline: true})
	if len(errs) != 0 || len(warnings) != 7 {
		t.Fatalf("errors %v, warnings:\n%v\nwant seven warnings", errs, warnings)
	}
	for _, want := range []string{
		"x.yaml:9:17: warning: tls: starttls on port 465, where SMTP submission clients start TLS with the first byte",
		"x.yaml:9:17: warning: tls: starttls on port 993, where IMAP clients",
		"x.yaml:9:17: warning: tls: starttls on port 995, where POP3 clients",
		"x.yaml:15:17: warning: tls: implicit on port 25, where SMTP clients start in plaintext",
		"x.yaml:15:17: warning: tls: implicit on port 587, where SMTP submission clients",
		"x.yaml:15:17: warning: tls: implicit on port 110, where POP3 clients",
		"x.yaml:15:17: warning: tls: implicit on port 143, where IMAP clients",
	} {
		if !strings.Contains(warnings.Error(), want) {
			t.Errorf("warnings lack %q:\n%v", want, warnings)
		}
	}
}

// dnsServer answers on loopback: known.test has an address, every other
// name does not exist.
func dnsServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		switch {
		case name == "known.test." && q.Question[0].Qtype == dns.TypeA:
			rr, _ := dns.NewRR("known.test. 60 IN A 127.0.0.1")
			m.Answer = append(m.Answer, rr)
		case name != "known.test.":
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// resolverAt is a resolver that asks only the DNS server at addr.
func resolverAt(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", addr)
	}}
}

// A back-end name that does not resolve is a warning at its address;
// names that resolve, IP addresses and offline checks give none.
func TestCheckWarnsOfNamesThatDoNotResolve(t *testing.T) {
	cfg, err := config.Parse("x.yaml", []byte(`admin: {listen: "off"}
backends:
  a: {address: known.test}
  b: {address: nowhere.test}
  c: {address: "127.0.0.1:25"}
  d: {address: mx.example.invalid}
listeners:
  - {name: l, listen: 127.0.0.1:0, port: 1, backends: [a, b, c, d]}
`))
	if err != nil {
		t.Fatal(err)
	}
	opts := config.CheckOptions{Resolver: resolverAt(dnsServer(t))}
	errs, warnings := cfg.Check(t.Context(), opts)
	if len(errs) != 0 || len(warnings) != 2 {
		t.Fatalf("errors %v, warnings:\n%v\nwant two warnings", errs, warnings)
	}
	for _, want := range []string{
		"x.yaml:4:16: warning: back-end b: nowhere.test does not resolve",
		"x.yaml:6:16: warning: back-end d: mx.example.invalid does not resolve: names under .invalid never do",
	} {
		if !strings.Contains(warnings.Error(), want) {
			t.Errorf("warnings lack %q:\n%v", want, warnings)
		}
	}
	if _, w := cfg.Check(t.Context(), config.CheckOptions{Offline: true}); len(w) != 0 {
		t.Errorf("offline, Check asked DNS: %v", w)
	}
}

// A DNS server that never answers holds the check up for the resolve
// timeout, not for each name's own timeouts and retries.
func TestCheckBoundsNameLookups(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	cfg, err := config.Parse("x.yaml", []byte(`admin: {listen: "off"}
backends: {a: {address: a.test}, b: {address: b.test}, c: {address: c.test}}
listeners:
  - {name: l, listen: 127.0.0.1:0, port: 1, backends: [a, b, c]}
`))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, warnings := cfg.Check(t.Context(), config.CheckOptions{Resolver: resolverAt(silent.LocalAddr().String()), ResolveTimeout: 300 * time.Millisecond})
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the lookups took %s with a 300ms bound", took)
	}
	if len(warnings) != 3 {
		t.Errorf("want a warning for each name:\n%v", warnings)
	}
}

// Names are looked up in parallel: eight names that each take half a
// second to answer all resolve within a three-second bound, which one
// after the other they could not.
func TestCheckLooksUpNamesInParallel(t *testing.T) {
	var yaml strings.Builder
	yaml.WriteString("admin: {listen: \"off\"}\nbackends:\n")
	var names []string
	for i := range 8 {
		fmt.Fprintf(&yaml, "  b%d: {address: slow%d.test}\n", i, i)
		names = append(names, fmt.Sprintf("b%d", i))
	}
	fmt.Fprintf(&yaml, "listeners:\n  - {name: l, listen: 127.0.0.1:0, port: 1, backends: [%s]}\n", strings.Join(names, ", "))
	cfg, err := config.Parse("x.yaml", []byte(yaml.String()))
	if err != nil {
		t.Fatal(err)
	}
	addr := slowDNSServer(t, 500*time.Millisecond)
	_, warnings := cfg.Check(t.Context(), config.CheckOptions{Resolver: resolverAt(addr), ResolveTimeout: 3 * time.Second})
	if len(warnings) != 0 {
		t.Errorf("names that answer within the bound, looked up in parallel, warned:\n%v", warnings)
	}
}

// slowDNSServer answers every A query with 127.0.0.1 and every other
// with no record, each after delay.
func slowDNSServer(t *testing.T, delay time.Duration) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		time.Sleep(delay)
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 127.0.0.1")
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// Load refuses a file whose certificate is missing with a Problems, and
// hands back the warnings of a file it accepts.
func TestLoadReturnsProblemsAndWarnings(t *testing.T) {
	f := newCheckFixture(t)
	path := filepath.Join(f.dir, "gatehouse.yaml")
	writeTestFile(t, path, []byte(f.config(f.missing, f.key, f.mapFile)))
	var ps config.Problems
	if _, _, err := config.Load(t.Context(), path, config.CheckOptions{}); !errors.As(err, &ps) || len(ps) != 1 || ps[0].File != path {
		t.Errorf("Load of a file naming a missing certificate: %v", err)
	}
	if _, err := config.LoadFile(path); !errors.As(err, &ps) {
		t.Errorf("LoadFile accepted it: %v", err)
	}
	if _, _, err := config.Load(t.Context(), path, config.CheckOptions{Offline: true}); err != nil {
		t.Errorf("offline: %v", err)
	}
}
