package config

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// SMTP listeners cap connections per client address at 50 unless told
// otherwise; other protocols keep no cap.
func TestSMTPMaxPerIPDefault(t *testing.T) {
	cfg, err := Parse("x.yaml", []byte(`
backends: {a: {address: 127.0.0.1}}
listeners:
  - {name: mx, protocol: smtp, listen: "127.0.0.1:2525", backends: [a]}
  - {name: mx2, protocol: smtp, listen: "127.0.0.1:2526", backends: [a], limits: {max_per_ip: 7}}
  - {name: l4, protocol: tcp, listen: "127.0.0.1:2527", backends: [a]}
  - {name: imap, protocol: imap, listen: "127.0.0.1:2528", backends: [a]}
  - {name: pop3, protocol: pop3, listen: "127.0.0.1:2529", backends: [a]}
  - {name: web, protocol: https, listen: "127.0.0.1:2530", backends: [a]}
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, l := range cfg.Listeners {
		got = append(got, l.Limits.MaxPerIP)
	}
	if want := []int{50, 7, 0, 100, 100, 0}; !slices.Equal(got, want) {
		t.Errorf("max_per_ip = %v, want %v", got, want)
	}
}

// validate refuses xclient on a passthrough listener and a source_address
// that is not an IP address.
func TestSMTPValidateXClientPassthrough(t *testing.T) {
	_, err := Parse("x.yaml", []byte(`
backends: {a: {address: 127.0.0.1}}
listeners:
  - {name: pt, protocol: smtp, listen: "127.0.0.1:2525", backends: [a], smtp: {mode: passthrough, xclient: true}}
  - {name: mx, protocol: smtp, listen: "127.0.0.1:2526", backends: [a], smtp: {source_address: mx.example}}
`))
	if err == nil || !strings.Contains(err.Error(), "xclient: works in mode relay only") ||
		!strings.Contains(err.Error(), `source_address "mx.example"`) {
		t.Fatalf("err = %v", err)
	}
}

// A back-end reached by a relay listener with XCLIENT and by a
// passthrough listener from the same source address is warned about; with
// a source address of its own the passthrough listener is not.
func TestSMTPXClientTrustWarning(t *testing.T) {
	config := func(ptSource string) *Config {
		cfg, err := Parse("x.yaml", []byte(`
backends: {postfix: {address: 127.0.0.1}, other: {address: 127.0.0.2}}
listeners:
  - {name: mx, protocol: smtp, listen: "127.0.0.1:2525", backends: [postfix], smtp: {xclient: true}}
  - {name: exch, protocol: smtp, listen: "127.0.0.1:2526", backends: [other, postfix], smtp: {mode: passthrough`+ptSource+`}}
`))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	w := config("").checkXClientTrust()
	if len(w) != 1 || !strings.Contains(w[0].Error(), "back-end postfix") || !strings.Contains(w[0].Error(), "smtp.source_address") ||
		!strings.HasPrefix(w[0].Error(), "x.yaml:5:") {
		t.Errorf("warnings = %q, want one about postfix at line 5", w)
	}
	_, all := config("").Check(context.Background(), CheckOptions{Offline: true})
	if len(all) != 1 {
		t.Errorf("Check's warnings = %q, want the XCLIENT one", all)
	}
	if w := config(", source_address: 127.0.0.3").checkXClientTrust(); len(w) != 0 {
		t.Errorf("warnings with a source address of its own: %q", w)
	}
}
