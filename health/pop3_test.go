package health

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// capaList is what Dovecot lists before TLS.
var capaList = []string{"+OK", "CAPA", "TOP", "UIDL", "RESP-CODES", "STLS", "USER", "SASL PLAIN", "."}

// A healthy server: "+OK" banner, CAPA listed, QUIT answered "+OK".
func TestPOP3BannerCapaQuit(t *testing.T) {
	f := startFake(t, script([]string{"+OK Dovecot ready."},
		exchange{"CAPA", capaList},
		exchange{"QUIT", []string{"+OK Logging out."}},
	))
	if err := probeNow(&POP3{Capa: true}, f.addr); err != nil {
		t.Fatal(err)
	}
	wantLines(t, f, "CAPA", "QUIT")
}

// Without Capa the probe says only QUIT.
func TestPOP3BannerQuit(t *testing.T) {
	f := startFake(t, script([]string{"+OK ready"},
		exchange{"QUIT", []string{"+OK bye"}},
	))
	if err := probeNow(&POP3{}, f.addr); err != nil {
		t.Fatal(err)
	}
	wantLines(t, f, "QUIT")
}

// A server without CAPA (RFC 2449 is optional) still passes.
func TestPOP3CapaUnsupported(t *testing.T) {
	f := startFake(t, script([]string{"+OK ready"},
		exchange{"CAPA", []string{"-ERR unknown command"}},
		exchange{"QUIT", []string{"+OK bye"}},
	))
	if err := probeNow(&POP3{Capa: true}, f.addr); err != nil {
		t.Fatal(err)
	}
	wantLines(t, f, "CAPA", "QUIT")
}

// A "-ERR" banner is down, and the probe still says QUIT.
func TestPOP3ErrBanner(t *testing.T) {
	f := startFake(t, script([]string{"-ERR [SYS/TEMP] too many connections"},
		exchange{"QUIT", []string{"+OK bye"}},
	))
	err := probeNow(&POP3{Capa: true}, f.addr)
	wantStage(t, err, StageProtocol)
	if got, want := err.Error(), "pop3: protocol: banner was -ERR [SYS/TEMP] too many connections"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
	wantLines(t, f, "QUIT")
}

// QUIT answered with -ERR is down.
func TestPOP3QuitRefused(t *testing.T) {
	f := startFake(t, script([]string{"+OK ready"},
		exchange{"QUIT", []string{"-ERR cannot expunge"}},
	))
	err := probeNow(&POP3{}, f.addr)
	wantStage(t, err, StageProtocol)
	if !strings.Contains(err.Error(), "QUIT answered -ERR cannot expunge") {
		t.Errorf("error %q does not quote the reply", err)
	}
	wantLines(t, f, "QUIT")
}

// stlsServer lists STLS, upgrades on STLS, then answers CAPA and QUIT
// inside TLS.
func stlsServer(c certs) func(p *peer) {
	return func(p *peer) {
		p.say("+OK ready")
		if p.play(
			exchange{"CAPA", capaList},
			exchange{"STLS", []string{"+OK Begin TLS negotiation now."}},
		) && p.upgrade(c.server) {
			p.play(
				exchange{"CAPA", []string{"+OK", "USER", "."}},
				exchange{"QUIT", []string{"+OK bye"}},
			)
		}
		p.drain()
	}
}

// STLS (RFC 2595): CAPA lists it, STLS, the handshake, CAPA again inside
// TLS, then QUIT.
func TestPOP3StartTLS(t *testing.T) {
	c := selfSigned(t)
	f := startFake(t, stlsServer(c))
	if err := probeNow(&POP3{Capa: true, StartTLS: true, TLSConfig: c.client}, f.addr); err != nil {
		t.Fatal(err)
	}
	wantLines(t, f, "CAPA", "STLS", "<tls>", "CAPA", "QUIT")
}

// A certificate the probe cannot verify fails at stage tls.
func TestPOP3StartTLSUntrusted(t *testing.T) {
	f := startFake(t, stlsServer(selfSigned(t)))
	err := probeNow(&POP3{Capa: true, StartTLS: true}, f.addr)
	wantStage(t, err, StageTLS)
	wantLines(t, f, "CAPA", "STLS", "<tls failed>")
}

// A server whose CAPA lacks STLS fails a StartTLS probe before STLS is
// tried, and the probe still says QUIT.
func TestPOP3StartTLSNotListed(t *testing.T) {
	f := startFake(t, script([]string{"+OK ready"},
		exchange{"CAPA", []string{"+OK", "USER", "."}},
		exchange{"QUIT", []string{"+OK bye"}},
	))
	err := probeNow(&POP3{Capa: true, StartTLS: true, TLSConfig: selfSigned(t).client}, f.addr)
	wantStage(t, err, StageProtocol)
	if !strings.Contains(err.Error(), "STLS") {
		t.Errorf("error %q does not mention STLS", err)
	}
	wantLines(t, f, "CAPA", "QUIT")
}

// STLS refused with -ERR is down.
func TestPOP3StartTLSRefused(t *testing.T) {
	f := startFake(t, script([]string{"+OK ready"},
		exchange{"STLS", []string{"-ERR TLS not available"}},
		exchange{"QUIT", []string{"+OK bye"}},
	))
	err := probeNow(&POP3{StartTLS: true}, f.addr)
	wantStage(t, err, StageProtocol)
	if !strings.Contains(err.Error(), "STLS answered -ERR TLS not available") {
		t.Errorf("error %q does not quote the reply", err)
	}
	wantLines(t, f, "STLS", "QUIT")
}

// Bytes sent right behind the go-ahead for TLS would be read as if they
// came over TLS: the probe refuses them instead of starting the handshake.
func TestPOP3DataAfterSTLSRefused(t *testing.T) {
	f := startFake(t, script([]string{"+OK ready"},
		exchange{"STLS", []string{"+OK Begin TLS", "+OK injected"}},
	))
	err := probeNow(&POP3{StartTLS: true, TLSConfig: selfSigned(t).client}, f.addr)
	wantStage(t, err, StageProtocol)
	if !strings.Contains(err.Error(), "after the go-ahead for TLS") {
		t.Errorf("error %q does not explain the refusal", err)
	}
}

// Implicit TLS (pop3s) speaks TLS from the first byte.
func TestPOP3ImplicitTLS(t *testing.T) {
	c := selfSigned(t)
	f := startFake(t, func(p *peer) {
		if p.upgrade(c.server) {
			script([]string{"+OK ready"}, exchange{"QUIT", []string{"+OK bye"}})(p)
		}
	})
	if err := probeNow(&POP3{ImplicitTLS: true, TLSConfig: c.client}, f.addr); err != nil {
		t.Fatal(err)
	}
	wantLines(t, f, "<tls>", "QUIT")
}

// A banner that never comes fails at the timeout.
func TestPOP3SilentServerTimesOut(t *testing.T) {
	f := startFake(t, func(p *peer) { p.drain() })
	const timeout = 150 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := (&POP3{Capa: true}).Probe(ctx, f.addr)
	if took := time.Since(start); took >= 2*timeout {
		t.Errorf("probe took %v, want under %v", took, 2*timeout)
	}
	wantStage(t, err, StageTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
}
