package config

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/protocols/https"
)

// The Exchange example keeps the admin center and remote PowerShell to
// internal networks, as the README says, and leaves the rest open.
func TestExchangeExampleKeepsAdminServicesInternal(t *testing.T) {
	cfg, err := LoadFile("../examples/exchange.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var l *Listener
	for i := range cfg.Listeners {
		if cfg.Listeners[i].Protocol == "https" {
			l = &cfg.Listeners[i]
		}
	}
	if l == nil {
		t.Fatal("no https listener in examples/exchange.yaml")
	}
	for _, name := range []string{https.ECP, https.PowerShell} {
		allow := l.HTTPS.Services[name].Allow
		if len(allow) == 0 {
			t.Errorf("%s: no allow list", name)
		}
		for _, a := range allow {
			if p, err := netip.ParsePrefix(a); err != nil || !p.Addr().IsPrivate() {
				t.Errorf("%s allows %q, not an internal network", name, a)
			}
		}
	}
	if allow := l.HTTPS.Services[https.OWA].Allow; len(allow) != 0 {
		t.Errorf("OWA restricted to %q", allow)
	}
}

func TestHTTPSAllowValidated(t *testing.T) {
	const bad = `
backends:
  ex1: {address: 10.0.0.11}
listeners:
  - name: https
    protocol: https
    listen: ["127.0.0.1:8443"]
    backends: [ex1]
    port: 443
    https:
      services:
        ecp: {allow: [internal]}
`
	_, err := Parse("gatehouse.yaml", []byte(bad))
	if err == nil || !strings.Contains(err.Error(), "services.ecp.allow[0]") {
		t.Errorf("ParseConfig = %v, want an error naming services.ecp.allow[0]", err)
	}
}
