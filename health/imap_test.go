package health

import (
	stdtls "crypto/tls"
	"io"
	"log"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// A healthy server: "* OK" greeting, then LOGOUT answered by BYE and a
// tagged OK.
func TestIMAPGreetingLogout(t *testing.T) {
	f := startFake(t, script([]string{"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready."},
		exchange{"a1 LOGOUT", []string{"* BYE Logging out", "a1 OK Logout completed."}},
	))
	if err := probeNow(&IMAP{}, f.addr); err != nil {
		t.Fatal(err)
	}
	wantLines(t, f, "a1 LOGOUT")
}

// A PREAUTH greeting is a working server too.
func TestIMAPPreauth(t *testing.T) {
	f := startFake(t, script([]string{"* PREAUTH IMAP4rev1 server logged in as probe"},
		exchange{"a1 LOGOUT", []string{"* BYE", "a1 OK done"}},
	))
	if err := probeNow(&IMAP{}, f.addr); err != nil {
		t.Fatal(err)
	}
	wantLines(t, f, "a1 LOGOUT")
}

// A "* BYE" greeting refuses service: down, and no LOGOUT follows, since
// the server is closing the connection.
func TestIMAPByeGreeting(t *testing.T) {
	f := startFake(t, script([]string{"* BYE Too many connections, try again later"}))
	err := probeNow(&IMAP{}, f.addr)
	wantStage(t, err, StageProtocol)
	if got, want := err.Error(), "imap: protocol: greeting was * BYE Too many connections, try again later"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
	wantLines(t, f)
}

// LOGOUT answered with a tagged BAD is down.
func TestIMAPLogoutRefused(t *testing.T) {
	f := startFake(t, script([]string{"* OK ready"},
		exchange{"a1 LOGOUT", []string{"a1 BAD what?"}},
	))
	err := probeNow(&IMAP{}, f.addr)
	wantStage(t, err, StageProtocol)
	if !strings.Contains(err.Error(), "LOGOUT answered BAD what?") {
		t.Errorf("error %q does not quote the reply", err)
	}
}

// STARTTLS refused is down, and the probe still says LOGOUT.
func TestIMAPStartTLSRefused(t *testing.T) {
	f := startFake(t, script([]string{"* OK ready"},
		exchange{"a1 STARTTLS", []string{"a1 NO TLS is not configured"}},
		exchange{"a2 LOGOUT", []string{"* BYE", "a2 OK"}},
	))
	err := probeNow(&IMAP{StartTLS: true}, f.addr)
	wantStage(t, err, StageProtocol)
	if !strings.Contains(err.Error(), "STARTTLS answered NO TLS is not configured") {
		t.Errorf("error %q does not quote the reply", err)
	}
	wantLines(t, f, "a1 STARTTLS", "a2 LOGOUT")
}

// STARTTLS after PREAUTH is impossible (the session is authenticated in
// the clear), so a StartTLS probe fails and logs out.
func TestIMAPStartTLSAfterPreauth(t *testing.T) {
	f := startFake(t, script([]string{"* PREAUTH logged in"},
		exchange{"a1 LOGOUT", []string{"* BYE", "a1 OK"}},
	))
	err := probeNow(&IMAP{StartTLS: true}, f.addr)
	wantStage(t, err, StageProtocol)
	if !strings.Contains(err.Error(), "PREAUTH") {
		t.Errorf("error %q does not mention PREAUTH", err)
	}
	wantLines(t, f, "a1 LOGOUT")
}

// startIMAPServer runs go-imap's in-memory server on loopback; with
// implicit set it speaks TLS at once, otherwise it offers STARTTLS.
func startIMAPServer(t *testing.T, cfg *stdtls.Config, implicit bool) (addr string, wire *lockedBuffer) {
	t.Helper()
	mem := imapmemserver.New()
	wire = &lockedBuffer{}
	opts := &imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		DebugWriter: wire,
		Logger:      log.New(io.Discard, "", 0),
	}
	ln := listen(t)
	addr = ln.Addr().String()
	if implicit {
		ln = stdtls.NewListener(ln, cfg)
	} else {
		opts.TLSConfig = cfg
	}
	srv := imapserver.New(opts)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return addr, wire
}

// STARTTLS against go-imap's server: greeting, STARTTLS, the handshake, then
// LOGOUT inside TLS.
func TestIMAPStartTLS(t *testing.T) {
	c := selfSigned(t)
	addr, wire := startIMAPServer(t, c.server, false)
	if err := probeNow(&IMAP{StartTLS: true, TLSConfig: c.client}, addr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "LOGOUT on the wire", func() bool { return strings.Contains(wire.String(), "a2 LOGOUT\r\n") })
	if !strings.Contains(wire.String(), "a1 STARTTLS\r\n") {
		t.Errorf("server never heard STARTTLS; wire:\n%s", wire)
	}
}

// A certificate the probe cannot verify fails at stage tls.
func TestIMAPStartTLSUntrusted(t *testing.T) {
	addr, _ := startIMAPServer(t, selfSigned(t).server, false)
	wantStage(t, probeNow(&IMAP{StartTLS: true}, addr), StageTLS)
}

// Implicit TLS (imaps) against go-imap's server.
func TestIMAPImplicitTLS(t *testing.T) {
	c := selfSigned(t)
	addr, wire := startIMAPServer(t, c.server, true)
	if err := probeNow(&IMAP{ImplicitTLS: true, TLSConfig: c.client}, addr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "LOGOUT on the wire", func() bool { return strings.Contains(wire.String(), "a1 LOGOUT\r\n") })
}
