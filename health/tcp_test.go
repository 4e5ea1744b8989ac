package health

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// A listener is up for a TCP probe; a closed port is down at stage connect.
func TestTCP(t *testing.T) {
	ln := listen(t)
	if err := probeNow(&TCP{}, ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	wantStage(t, probeNow(&TCP{}, wiretest.FreeAddr(t)), StageConnect)
}

// A dial that outlives the timeout fails at stage timeout.
func TestTCPDialTimeout(t *testing.T) {
	hang := func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := (&TCP{Dial: hang}).Probe(ctx, "192.0.2.1:25")
	wantStage(t, err, StageTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
}

// tlsServer accepts and completes TLS handshakes with c until the test ends.
func tlsServer(t *testing.T, c certs) string {
	return startFake(t, func(p *peer) {
		if p.upgrade(c.server) {
			p.drain()
		}
	}).addr
}

// The TLS probe verifies the certificate: trusted passes, and the default
// (nil) configuration fails against a self-signed one.
func TestTLS(t *testing.T) {
	c := selfSigned(t)
	addr := tlsServer(t, c)
	if err := probeNow(&TLS{Config: c.client}, addr); err != nil {
		t.Fatal(err)
	}
	err := probeNow(&TLS{}, addr)
	wantStage(t, err, StageTLS)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("error %v is not about an unknown authority", err)
	}
}

// A server that speaks no TLS fails the handshake.
func TestTLSAgainstPlaintext(t *testing.T) {
	f := startFake(t, script([]string{"220 mx.example.test ESMTP"}))
	wantStage(t, probeNow(&TLS{Config: selfSigned(t).client}, f.addr), StageTLS)
}
