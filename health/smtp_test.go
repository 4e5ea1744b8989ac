package health

import (
	"bytes"
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// A healthy server greets, answers EHLO with 250 and QUIT with 221; the
// probe must end with QUIT, never by hanging up mid-session (haproxy 1812).
func TestSMTPGreetingEHLOAndQuit(t *testing.T) {
	f := startFake(t, script([]string{"220 mx.example.test ESMTP"},
		exchange{"EHLO ", []string{"250-mx.example.test", "250-PIPELINING", "250 8BITMIME"}},
		exchange{"QUIT", []string{"221 2.0.0 Bye"}},
	))
	if err := probeNow(&SMTP{HELO: "probe.example.test"}, f.addr); err != nil {
		t.Fatal(err)
	}
	wantLines(t, f, "EHLO probe.example.test", "QUIT")
}

// An Exchange front end being drained answers EHLO with 421: down, with the
// reply in the error, and no QUIT since 421 means the server is closing.
func TestSMTPEHLOAnswered421(t *testing.T) {
	f := startFake(t, script([]string{"220 mx.example.test ESMTP"},
		exchange{"EHLO ", []string{"421 4.3.2 shutting down"}},
	))
	err := probeNow(&SMTP{}, f.addr)
	wantStage(t, err, StageProtocol)
	if got, want := err.Error(), "smtp: protocol: EHLO answered 421 4.3.2 shutting down"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 421 {
		t.Errorf("error %v does not unwrap to the 421 reply", err)
	}
	wantLines(t, f, "EHLO localhost")
}

// A refusal that leaves the server listening (554 at EHLO) is still
// followed by QUIT.
func TestSMTPRefusalEndsWithQuit(t *testing.T) {
	f := startFake(t, script([]string{"220 mx.example.test ESMTP"},
		exchange{"EHLO ", []string{"554 5.7.1 not from you"}},
		exchange{"QUIT", []string{"221 2.0.0 Bye"}},
	))
	err := probeNow(&SMTP{}, f.addr)
	wantStage(t, err, StageProtocol)
	if !strings.Contains(err.Error(), "EHLO answered 554 5.7.1 not from you") {
		t.Errorf("error %q does not quote the reply", err)
	}
	wantLines(t, f, "EHLO localhost", "QUIT")
}

// A greeting other than 220 is down, named as the greeting, and answered
// with QUIT (RFC 5321 section 3.1).
func TestSMTPGreetingRefused(t *testing.T) {
	f := startFake(t, script([]string{"554 5.3.2 no service here"},
		exchange{"QUIT", []string{"221 2.0.0 Bye"}},
	))
	err := probeNow(&SMTP{}, f.addr)
	wantStage(t, err, StageProtocol)
	if got, want := err.Error(), "smtp: protocol: greeting was 554 5.3.2 no service here"; got != want {
		t.Errorf("error %q, want %q", got, want)
	}
	wantLines(t, f, "QUIT")
}

// A server that accepts and never greets fails at the probe's timeout, not
// at go-smtp's five-minute command timeout.
func TestSMTPSilentServerTimesOut(t *testing.T) {
	f := startFake(t, func(p *peer) { p.drain() })
	const timeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := (&SMTP{}).Probe(ctx, f.addr)
	if took := time.Since(start); took >= 2*timeout {
		t.Errorf("probe took %v, want under %v", took, 2*timeout)
	}
	wantStage(t, err, StageTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "greeting") {
		t.Errorf("error %q does not say it waited for the greeting", err)
	}
}

// Nothing listening is a connect failure.
func TestSMTPConnectRefused(t *testing.T) {
	wantStage(t, probeNow(&SMTP{}, wiretest.FreeAddr(t)), StageConnect)
}

// mailServer is a real go-smtp server on loopback; wire holds what it
// read and wrote, in the clear also inside TLS.
type mailServer struct {
	addr     string
	wire     *lockedBuffer
	sessions chan bool // one value per session: whether it ran inside TLS
}

// startMailServer serves go-smtp; with implicit set it speaks TLS at once,
// otherwise it offers STARTTLS when cfg is not nil.
func startMailServer(t *testing.T, cfg *stdtls.Config, implicit bool) *mailServer {
	t.Helper()
	ms := &mailServer{wire: &lockedBuffer{}, sessions: make(chan bool, 16)}
	srv := gosmtp.NewServer(ms)
	srv.Domain = "mx.example.test"
	srv.Debug = ms.wire
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln := listen(t)
	ms.addr = ln.Addr().String()
	if implicit {
		ln = stdtls.NewListener(ln, cfg)
	} else {
		srv.TLSConfig = cfg
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ms
}

// NewSession notes whether the session runs inside TLS.
func (ms *mailServer) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	_, tls := c.TLSConnectionState()
	ms.sessions <- tls
	return nopSession{}, nil
}

// heard reports whether the client sent line.
func (ms *mailServer) heard(line string) bool {
	return strings.Contains(ms.wire.String(), line+"\r\n")
}

// nopSession refuses mail; the probes never send any.
type nopSession struct{}

func (nopSession) Reset()                                 {}
func (nopSession) Logout() error                          { return nil }
func (nopSession) Mail(string, *gosmtp.MailOptions) error { return errors.New("no mail here") }
func (nopSession) Rcpt(string, *gosmtp.RcptOptions) error { return errors.New("no mail here") }
func (nopSession) Data(io.Reader) error                   { return errors.New("no mail here") }

// lockedBuffer is a bytes.Buffer safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (lb *lockedBuffer) Write(p []byte) (int, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.b.Write(p)
}

// String returns everything written so far.
func (lb *lockedBuffer) String() string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.b.String()
}

// sessionsTLS returns, for each session the server has begun so far,
// whether it ran inside TLS.
func (ms *mailServer) sessionsTLS() []bool {
	var got []bool
	for {
		select {
		case tls := <-ms.sessions:
			got = append(got, tls)
		default:
			return got
		}
	}
}

// With STARTTLS the probe says EHLO, upgrades, says EHLO again inside TLS
// and ends with QUIT; go-smtp's own server is the peer.
func TestSMTPStartTLS(t *testing.T) {
	c := selfSigned(t)
	ms := startMailServer(t, c.server, false)
	if err := probeNow(&SMTP{HELO: "probe.example.test", StartTLS: true, TLSConfig: c.client}, ms.addr); err != nil {
		t.Fatal(err)
	}
	// go-smtp opens a session at each EHLO: one before TLS, one inside.
	if got := ms.sessionsTLS(); len(got) != 2 || got[0] || !got[1] {
		t.Errorf("sessions in TLS: %v, want [false true]", got)
	}
	for _, line := range []string{"EHLO localhost", "STARTTLS", "EHLO probe.example.test", "QUIT"} {
		if !ms.heard(line) {
			t.Errorf("server never heard %q; wire:\n%s", line, ms.wire)
		}
	}
}

// A server that does not offer STARTTLS fails a STARTTLS probe, which
// still says QUIT.
func TestSMTPStartTLSNotOffered(t *testing.T) {
	ms := startMailServer(t, nil, false)
	err := probeNow(&SMTP{StartTLS: true, TLSConfig: selfSigned(t).client}, ms.addr)
	wantStage(t, err, StageProtocol)
	if !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("error %q does not mention STARTTLS", err)
	}
	waitFor(t, "QUIT on the wire", func() bool { return ms.heard("QUIT") })
}

// A certificate the probe cannot verify fails at stage tls: a nil
// TLSConfig never skips verification.
func TestSMTPStartTLSUntrusted(t *testing.T) {
	ms := startMailServer(t, selfSigned(t).server, false)
	err := probeNow(&SMTP{StartTLS: true}, ms.addr)
	wantStage(t, err, StageTLS)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("error %v is not about an unknown authority", err)
	}
}

// Implicit TLS (smtps) speaks TLS from the first byte.
func TestSMTPImplicitTLS(t *testing.T) {
	c := selfSigned(t)
	ms := startMailServer(t, c.server, true)
	if err := probeNow(&SMTP{ImplicitTLS: true, TLSConfig: c.client}, ms.addr); err != nil {
		t.Fatal(err)
	}
	if got := ms.sessionsTLS(); len(got) != 1 || !got[0] {
		t.Errorf("sessions in TLS: %v, want [true]", got)
	}
	if !ms.heard("QUIT") {
		t.Errorf("server never heard QUIT; wire:\n%s", ms.wire)
	}
}

// The probe dials through its Dial field, so the root package can write a
// PROXY header first.
func TestSMTPUsesDial(t *testing.T) {
	ms := startMailServer(t, nil, false)
	var dialed []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed = append(dialed, network+" "+addr)
		var d net.Dialer
		return d.DialContext(ctx, network, ms.addr)
	}
	if err := probeNow(&SMTP{Dial: dial}, "mx1.example.test:25"); err != nil {
		t.Fatal(err)
	}
	if len(dialed) != 1 || dialed[0] != "tcp mx1.example.test:25" {
		t.Errorf("dialed %q, want one dial of tcp mx1.example.test:25", dialed)
	}
}
