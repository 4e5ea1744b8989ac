package tls

import (
	stdtls "crypto/tls"
	"crypto/x509"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	certExpiry = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatehouse_tls_certificate_expiry_seconds",
		Help: "Expiry (Unix time) of the certificate served for each name.",
	}, []string{"name"})

	handshakes = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_tls_handshakes_total",
		Help: "Server TLS handshakes by result: ok (full), resumed (session ticket), " +
			"failed (seen by ServerHandshake and ServerStartTLS only).",
	}, []string{"result"})

	startTLSDiscards = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_tls_starttls_discarded_total",
		Help: "STARTTLS upgrades that found and discarded pipelined plaintext, " +
			"by side: server (client injected commands), client (back-end injected responses).",
	}, []string{"side"})
)

// countHandshake is a VerifyConnection hook: crypto/tls calls it once per
// successful server handshake, full or resumed.
func countHandshake(cs stdtls.ConnectionState) error {
	if cs.DidResume {
		handshakes.WithLabelValues("resumed").Inc()
	} else {
		handshakes.WithLabelValues("ok").Inc()
	}
	return nil
}

// recordExpiry sets the expiry gauge of every name on leaf.
func recordExpiry(leaf *x509.Certificate) {
	if leaf == nil {
		return
	}
	for _, name := range certNames(leaf) {
		certExpiry.WithLabelValues(name).Set(float64(leaf.NotAfter.Unix()))
	}
}

// certNames lists the DNS names and IP addresses a certificate is for.
func certNames(leaf *x509.Certificate) []string {
	names := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && leaf.Subject.CommonName != "" {
		names = append(names, leaf.Subject.CommonName)
	}
	return names
}
