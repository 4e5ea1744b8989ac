package https

import (
	"bytes"
	"context"
	"crypto/sha256"
	stdtls "crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// CertCheck is the comparison of the listener's edge certificate with the
// one a back-end presents. Exchange's Extended Protection (on by default
// from Exchange 2019 CU14) binds NTLM and Negotiate to the TLS
// certificate the client saw: through a proxy that terminates TLS, those
// logins work only when the back-end presents the very same certificate
// (haproxy issue 1828; microsoft/CSS-Exchange docs/Emerging-Issues.md).
type CertCheck struct {
	// Backend and Addr name the back-end.
	Backend string `json:"backend"`
	Addr    string `json:"addr"`
	// Services lists the services that route to it with TLS terminated.
	Services []string `json:"services"`
	// Match is true when the back-end's leaf certificate is the edge's.
	Match bool `json:"match"`
	// Edge and Presented are SHA-256 fingerprints (hex) of the two leaf
	// certificates; Presented is empty when none was seen.
	Edge      string `json:"edge_sha256"`
	Presented string `json:"backend_sha256,omitempty"`
	// Problem says why Match is false, in words for an operator.
	Problem string `json:"problem,omitempty"`
	// Checked is when the comparison ran.
	Checked time.Time `json:"checked"`
}

// certState keeps the last comparison for the status API.
type certState struct {
	mu   sync.Mutex
	last []CertCheck
	edge []byte // leaf compared last time
}

// CertificateStatus returns the last certificate comparison, one entry
// per back-end (nil before the first).
func (f *Frontend) CertificateStatus() []CertCheck {
	f.certs.mu.Lock()
	defer f.certs.mu.Unlock()
	return slices.Clone(f.certs.last)
}

// WatchCertificates compares certificates now and again whenever the edge
// certificate changes (looked at every Config.CertCheckInterval), until
// ctx is done.
func (f *Frontend) WatchCertificates(ctx context.Context) {
	f.init()
	t := time.NewTicker(f.Config.CertCheckInterval)
	defer t.Stop()
	for {
		leaf, err := f.edgeLeaf()
		if err == nil && f.edgeChanged(leaf) {
			f.CheckCertificates(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *Frontend) edgeChanged(leaf []byte) bool {
	f.certs.mu.Lock()
	defer f.certs.mu.Unlock()
	return !bytes.Equal(leaf, f.certs.edge)
}

// CheckCertificates compares the edge certificate with each back-end's,
// logs every mismatch as an error, sets the mismatch metric and keeps the
// result for CertificateStatus.
func (f *Frontend) CheckCertificates(ctx context.Context) []CertCheck {
	f.init()
	leaf, err := f.edgeLeaf()
	if err != nil {
		f.log().Warn("certificate comparison skipped", "listener", f.name(), "err", err)
		return nil
	}
	var out []CertCheck
	for _, t := range f.certTargets() {
		c := f.checkOne(ctx, t, leaf)
		out = append(out, c)
		f.report(c)
	}
	f.certs.mu.Lock()
	f.certs.last, f.certs.edge = out, leaf
	f.certs.mu.Unlock()
	return out
}

// certTarget is a back-end and the terminating services that use it.
type certTarget struct {
	b        *proxy.Backend
	pool     *proxy.Pool
	services []string
}

// certTargets lists each back-end once, with the services that reach it
// with TLS terminated here (passed-through services need no comparison).
func (f *Frontend) certTargets() []certTarget {
	var out []certTarget
	index := map[string]int{}
	for _, service := range serviceNames {
		if f.Config.service(service).TLS == TLSPassthrough {
			continue
		}
		pool := f.pool(service)
		for _, b := range pool.Backends {
			i, ok := index[b.Name]
			if !ok {
				i = len(out)
				index[b.Name] = i
				out = append(out, certTarget{b: b, pool: pool})
			}
			out[i].services = append(out[i].services, service)
		}
	}
	return out
}

// edgeLeaf returns the DER of the certificate the listener serves.
func (f *Frontend) edgeLeaf() ([]byte, error) {
	cfg := f.EdgeTLS
	if cfg == nil {
		return nil, errors.New("the listener has no TLS")
	}
	var cert *stdtls.Certificate
	if len(cfg.Certificates) > 0 {
		cert = &cfg.Certificates[0]
	} else if cfg.GetCertificate != nil {
		name := ""
		if f.BackendTLS != nil {
			name = f.BackendTLS.ServerName
		}
		c, err := cfg.GetCertificate(&stdtls.ClientHelloInfo{ServerName: name})
		if err != nil {
			return nil, fmt.Errorf("edge certificate: %w", err)
		}
		cert = c
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("the listener has no certificate")
	}
	return cert.Certificate[0], nil
}

// checkOne fetches one back-end's certificate and compares it.
func (f *Frontend) checkOne(ctx context.Context, t certTarget, edge []byte) CertCheck {
	c := CertCheck{Backend: t.b.Name, Addr: t.b.Addr, Services: t.services, Edge: fingerprint(edge), Checked: time.Now()}
	if f.BackendTLSMode != proxy.TLSImplicit {
		c.Problem = "back-end reached over plain HTTP (TLS offloading): NTLM and Negotiate fail when Exchange enforces Extended Protection"
		return c
	}
	got, err := f.backendLeaf(ctx, t)
	switch {
	case err != nil:
		c.Problem = "could not read the back-end's certificate: " + err.Error()
	case !bytes.Equal(got, edge):
		c.Presented = fingerprint(got)
		c.Problem = "the back-end presents another certificate than the listener: NTLM and Negotiate fail when Exchange enforces Extended Protection; serve the same certificate on both or use tls: passthrough"
	default:
		c.Presented, c.Match = c.Edge, true
	}
	return c
}

// backendLeaf does a TLS handshake with the back-end to see its leaf.
func (f *Frontend) backendLeaf(ctx context.Context, t certTarget) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout(t.pool)+5*time.Second)
	defer cancel()
	dial := t.pool.Dialer
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "tcp", t.b.Addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if f.ProxyVersion != 0 {
		if err := proxy.WriteProxyHeader(conn, f.ProxyVersion, nil, nil); err != nil {
			return nil, err
		}
	}
	cfg := &stdtls.Config{InsecureSkipVerify: true} // only looked at, never trusted
	if f.BackendTLS != nil {
		cfg.ServerName = f.BackendTLS.ServerName
	}
	tc := stdtls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc.ConnectionState().PeerCertificates[0].Raw, nil
}

// report logs and counts one comparison.
func (f *Frontend) report(c CertCheck) {
	g := certMismatch.WithLabelValues(f.name(), c.Backend)
	if c.Match {
		g.Set(0)
		f.log().Info("back-end certificate matches the edge certificate", "listener", f.name(), "backend", c.Backend)
		return
	}
	g.Set(1)
	f.log().Error("EXTENDED PROTECTION WILL BREAK NTLM/NEGOTIATE: "+c.Problem, "listener", f.name(),
		"backend", c.Backend, "addr", c.Addr, "services", c.Services, "edge_sha256", c.Edge, "backend_sha256", c.Presented)
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
