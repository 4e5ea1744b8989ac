package tls

import (
	stdtls "crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// pebble is Let's Encrypt's test ACME server, run in-process on loopback.
type pebble struct {
	dir    string         // ACME directory URL
	caRoot string         // PEM file that trusts the ACME server's HTTPS
	roots  *x509.CertPool // root of the certificates it issues
	orders atomic.Int64   // new-order requests received
	srv    *httptest.Server
}

// startPebble runs Pebble for the test on a new loopback port. Its
// validation authority connects to httpPort for HTTP-01 and tlsPort for
// TLS-ALPN-01, and resolves every name to 127.0.0.1 through a loopback DNS
// server, so no query or connection leaves the machine. Certificates are
// valid for validity.
func startPebble(t *testing.T, httpPort, tlsPort int, validity time.Duration) *pebble {
	return startPebbleOn(t, listen(t), newPebbleFront(t), httpPort, tlsPort, validity)
}

// pebbleFront is the HTTPS identity of a Pebble server, made before the
// server starts so that a Manager can be configured to trust it while the
// CA is still down.
type pebbleFront struct {
	cert   stdtls.Certificate // for 127.0.0.1
	caRoot string             // PEM file of its issuer, for Certificates.CARoot
}

func newPebbleFront(t *testing.T) pebbleFront {
	ca := newTestCA(t, "pebble https")
	f := pebbleFront{cert: ca.issue(t, "127.0.0.1"), caRoot: filepath.Join(t.TempDir(), "pebble-https.pem")}
	if err := os.WriteFile(f.caRoot, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// startPebbleOn runs Pebble as startPebble does, serving its ACME API on ln
// with front's certificate.
func startPebbleOn(t *testing.T, ln net.Listener, https pebbleFront, httpPort, tlsPort int, validity time.Duration) *pebble {
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random 0-15 s wait before validating
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no deliberately bad nonces
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order is validated again
	quiet := log.New(io.Discard, "", 0)
	store := db.NewMemoryStore()
	profiles := map[string]ca.Profile{"default": {Description: "test", ValidityPeriod: uint64(validity / time.Second)}}
	authority := ca.New(quiet, store, "", "ecdsa", 0, 1, profiles)
	validator := va.New(quiet, httpPort, tlsPort, false, loopbackDNS(t), store)
	front := wfe.New(quiet, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 1, 1)

	p := &pebble{roots: x509.NewCertPool(), caRoot: https.caRoot}
	p.roots.AddCert(authority.GetRootCert(0).Cert)
	acmeHandler := front.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
			p.orders.Add(1)
		}
		acmeHandler.ServeHTTP(w, r)
	}))
	srv.Listener.Close() // the one httptest opened; ln replaces it
	srv.Listener = ln
	srv.TLS = &stdtls.Config{Certificates: []stdtls.Certificate{https.cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.srv = srv
	p.dir = srv.URL + wfe.DirectoryPath
	return p
}

// loopbackDNS serves DNS over TCP (as Pebble's validator asks it) on
// loopback, answering 127.0.0.1 for every A question and nothing else.
func loopbackDNS(t *testing.T) string {
	ln := listen(t)
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, question := range q.Question {
			if question.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// port returns the TCP port ln listens on.
func port(ln net.Listener) int {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

// serveHTTP serves h on ln until the end of the test: the port-80
// listener of these tests.
func serveHTTP(t *testing.T, ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: ioTimeout}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}
