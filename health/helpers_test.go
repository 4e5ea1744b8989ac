package health

import (
	"bufio"
	"context"
	stdtls "crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// testWait bounds every wait in these tests: a fake server's read, a
// probe, a poll for a Monitor's state.
const testWait = 5 * time.Second

// listen opens a loopback listener on a free port, closed when the test ends.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// certs is a self-signed certificate for 127.0.0.1 and mail.example.test,
// as a server configuration and a client configuration that trusts it.
type certs struct {
	server, client *stdtls.Config
}

// selfSigned gives a test the shared test certificate (localhost and
// 127.0.0.1) and a client configuration that trusts exactly it.
func selfSigned(t *testing.T) certs {
	t.Helper()
	client := wiretest.ClientTLS()
	client.ServerName = ""
	return certs{server: wiretest.ServerTLS(), client: client}
}

// fake is a scripted line server on loopback: each connection runs the
// handler, and every line the clients send is kept in order (with "<tls>"
// where a connection turned to TLS), so a test can compare the transcript.
type fake struct {
	addr  string
	conns sync.WaitGroup // one count per connection being served
	mu    sync.Mutex
	heard []string
}

// startFake serves handle on a fresh listener until the test ends.
func startFake(t *testing.T, handle func(p *peer)) *fake {
	t.Helper()
	ln := listen(t)
	f := &fake{addr: ln.Addr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			f.conns.Add(1)
			go func() {
				defer f.conns.Done()
				defer conn.Close()
				handle(&peer{f: f, conn: conn, r: bufio.NewReader(conn)})
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done; f.conns.Wait() })
	return f
}

// lines returns the lines heard so far.
func (f *fake) lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.heard...)
}

// peer is the server side of one connection.
type peer struct {
	f    *fake
	conn net.Conn
	r    *bufio.Reader
}

// say writes reply lines.
func (p *peer) say(lines ...string) {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	_, _ = io.WriteString(p.conn, b.String())
}

// hear reads one line, records it, and reports false at EOF or after testWait.
func (p *peer) hear() (string, bool) {
	_ = p.conn.SetReadDeadline(time.Now().Add(testWait))
	line, err := p.r.ReadString('\n')
	if err != nil {
		return "", false
	}
	line = strings.TrimRight(line, "\r\n")
	p.record(line)
	return line, true
}

// record adds a line to the transcript.
func (p *peer) record(line string) {
	p.f.mu.Lock()
	p.f.heard = append(p.f.heard, line)
	p.f.mu.Unlock()
}

// drain records what the client still sends until it hangs up.
func (p *peer) drain() {
	for {
		if _, ok := p.hear(); !ok {
			return
		}
	}
}

// upgrade runs the server side of a TLS handshake.
func (p *peer) upgrade(cfg *stdtls.Config) bool {
	tc := stdtls.Server(p.conn, cfg)
	_ = tc.SetDeadline(time.Now().Add(testWait))
	if err := tc.Handshake(); err != nil {
		p.record("<tls failed>")
		return false
	}
	p.record("<tls>")
	p.conn, p.r = tc, bufio.NewReader(tc)
	return true
}

// exchange is one step of a script: a line the client must send (matched
// by prefix) and the reply lines to it.
type exchange struct {
	hear string
	say  []string
}

// play answers the client's lines by the steps while it follows them, and
// reports whether it followed them all.
func (p *peer) play(steps ...exchange) bool {
	for _, s := range steps {
		line, ok := p.hear()
		if !ok || !strings.HasPrefix(line, s.hear) {
			return false
		}
		p.say(s.say...)
	}
	return true
}

// script returns a handler that greets, plays the steps, and then records
// what the client still sends until it hangs up.
func script(greeting []string, steps ...exchange) func(p *peer) {
	return func(p *peer) {
		p.say(greeting...)
		p.play(steps...)
		p.drain()
	}
}

// probeNow runs p against addr with a timeout of testWait.
func probeNow(p Probe, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	return p.Probe(ctx, addr)
}

// stageOf returns the stage of a probe's error, or "" for nil or another error.
func stageOf(err error) string {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Stage
	}
	return ""
}

// wantStage fails the test unless err is an *Error of the given stage.
func wantStage(t *testing.T, err error, stage string) {
	t.Helper()
	if got := stageOf(err); got != stage {
		t.Fatalf("error %v: stage %q, want %q", err, got, stage)
	}
}

// wantLines waits until the fake's connections have ended (the probe has
// hung up), then fails the test unless the transcript is exactly want. The
// fake must speak first, so that every connection is being served by then.
func wantLines(t *testing.T, f *fake, want ...string) {
	t.Helper()
	f.conns.Wait()
	got := f.lines()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("server heard %q, want %q", got, want)
	}
}

// quietLog is a logger for tests that do not look at logs.
func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// waitFor polls cond until it holds, failing the test after testWait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
