package gatehouse

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/dovecottest"
	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// line is a client of a line protocol on a real socket, bounded in time.
type line struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialMail(t *testing.T, addr string) *line {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return &line{t: t, c: c, br: bufio.NewReader(c)}
}

func (l *line) send(s string) {
	l.t.Helper()
	if _, err := l.c.Write([]byte(s + "\r\n")); err != nil {
		l.t.Fatalf("send %q: %v", s, err)
	}
}

// expect reads lines until one starts with prefix; an earlier line that
// looks final (another SMTP code, a tagged IMAP reply) fails the test.
func (l *line) expect(prefix string) string {
	l.t.Helper()
	for {
		s, err := l.br.ReadString('\n')
		if err != nil {
			l.t.Fatalf("waiting for %q: %v (a reload ended the session?)", prefix, err)
		}
		if strings.HasPrefix(s, prefix) {
			return s
		}
		if len(s) > 3 && s[3] == '-' { // SMTP continuation
			continue
		}
		if strings.HasPrefix(s, "* ") {
			continue
		}
		l.t.Fatalf("waiting for %q, got %q", prefix, s)
	}
}

// lifecycleConfig is a gatehouse with a listener of each kind whose
// sessions must outlive reloads: spliced TCP, SMTP relay, IMAP (spliced
// after the login) and Exchange HTTPS (an ActiveSync Ping held open).
type lifecycleConfig struct {
	echo, smtp, imap, https string // back-end addresses
	ports                   [4]string
}

func (c lifecycleConfig) yaml(weight int) string {
	return fmt.Sprintf(`
admin: {listen: "off"}
log: {level: error}
shutdown_grace: 1s
reload_grace: 1s
backends:
  echo: {address: %q}
  mx: {address: %q, weight: %d}
  imap: {address: %q}
  cas: {address: %q}
listeners:
  - {name: tcp, listen: %q, backends: [echo]}
  - {name: smtp, protocol: smtp, listen: %q, backends: [mx], smtp: {hostname: gw.example}}
  - {name: imap, protocol: imap, listen: %q, backends: [imap]}
  - {name: https, protocol: https, listen: %q, backends: [cas]}
`, c.echo, c.smtp, weight, c.imap, c.https, c.ports[0], c.ports[1], c.ports[2], c.ports[3])
}

func startLifecycle(t *testing.T) (*Server, lifecycleConfig, *exchangetest.Server) {
	t.Helper()
	echo := echoServer(t, "echo")
	t.Cleanup(func() { echo.Close() })
	mx := smtptest.NewServer("mx")
	t.Cleanup(mx.Close)
	imap := dovecottest.Start(t, "imap", "alice")
	cas := exchangetest.NewUnstartedServer("cas")
	cas.PingHold = 8 * time.Second
	cas.Start()
	t.Cleanup(cas.Close)
	c := lifecycleConfig{echo: echo.Addr().String(), smtp: mx.Addr, imap: imap.IMAP, https: cas.Addr}
	for i := range c.ports {
		c.ports[i] = wiretest.FreeAddr(t)
	}
	return startServer(t, c.yaml(1)), c, cas
}

// A live session belongs to the configuration it started with: twenty
// reloads, with shutdown_grace at one second, end none of a spliced TCP
// session, an idle SMTP relay session, an IMAP IDLE through Dovecot, a
// held ActiveSync Ping and an Outlook Anywhere RPC channel pair, and each
// works afterwards.
func TestReloadKeepsEverySession(t *testing.T) {
	srv, c, cas := startLifecycle(t)

	tcp := dialMail(t, c.ports[0])
	tcp.send("before")
	tcp.expect("echo before")

	mail := dialMail(t, c.ports[1])
	mail.expect("220 ")
	mail.send("EHLO client.example")
	mail.expect("250 ")

	imap := dialMail(t, c.ports[2])
	imap.expect("* OK")
	imap.send("a LOGIN alice demo")
	imap.expect("a OK")
	imap.send("b SELECT INBOX")
	imap.expect("b OK")
	imap.send("c IDLE")
	imap.expect("+ ")

	ping := dialMail(t, c.ports[3])
	fmt.Fprintf(ping.c, "POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=dev1&DeviceType=iPhone HTTP/1.1\r\n"+
		"Host: mail.example.com\r\nMS-ASProtocolVersion: 14.1\r\nContent-Length: 6\r\n\r\n<Ping>")
	waitFor(t, func() bool { return cas.HeldPings() == 1 })
	rpcIn, rpcOut := rpcChannels(t, c.ports[3])
	start := time.Now()

	for i := range 20 {
		if err := srv.Reload(parse(t, c.yaml(1+i%2))); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if time.Since(start) < 1500*time.Millisecond {
		time.Sleep(1500*time.Millisecond - time.Since(start)) // past shutdown_grace and reload_grace
	}

	tcp.send("after")
	tcp.expect("echo after")

	mail.send("MAIL FROM:<a@client.example>")
	mail.expect("250 ")
	mail.send("RCPT TO:<b@example.com>")
	mail.expect("250 ")
	mail.send("DATA")
	mail.expect("354 ")
	mail.send("Subject: across reloads\r\n\r\nhello\r\n.")
	mail.expect("250 ")

	imap.send("DONE")
	imap.expect("c OK")
	imap.send("d NOOP")
	imap.expect("d OK")

	if _, err := rpcIn.Write([]byte("rpc across reloads")); err != nil {
		t.Fatalf("RPC IN channel: %v", err)
	}
	got := make([]byte, len("rpc across reloads"))
	if _, err := io.ReadFull(rpcOut.br, got); err != nil || string(got) != "rpc across reloads" {
		t.Fatalf("RPC OUT channel after the reloads: %q, %v", got, err)
	}

	resp, err := http.ReadResponse(ping.br, nil)
	if err != nil {
		t.Fatalf("the held Ping was ended by a reload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("held Ping answered %d", resp.StatusCode)
	}
}

// rpcChannels opens an Outlook Anywhere channel pair through gatehouse:
// the OUT channel (answered 200 and its first PDUs), then the IN channel
// with the same virtual connection cookie, whose bytes the Exchange test
// server sends back on the OUT channel.
func rpcChannels(t *testing.T, addr string) (in net.Conn, out *line) {
	t.Helper()
	vc := [16]byte{0x42, 1, 2, 3}
	out = dialMail(t, addr)
	fmt.Fprintf(out.c, "RPC_OUT_DATA /rpc/rpcproxy.dll?mbx@example.com:6001 HTTP/1.1\r\nHost: mail.example.com\r\n"+
		"Content-Length: 76\r\n\r\n%s", exchangetest.ConnA1(vc))
	resp, err := http.ReadResponse(out.br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("OUT channel: %v %v", resp, err)
	}
	if _, err := io.ReadFull(out.br, make([]byte, 72)); err != nil { // CONN/A3 and CONN/C2
		t.Fatalf("OUT channel's first PDUs: %v", err)
	}
	inLine := dialMail(t, addr)
	fmt.Fprintf(inLine.c, "RPC_IN_DATA /rpc/rpcproxy.dll?mbx@example.com:6001 HTTP/1.1\r\nHost: mail.example.com\r\n"+
		"Content-Length: 1073741824\r\n\r\n%s", exchangetest.ConnB1(vc))
	return inLine.c, out
}

// Reloads come back to back from two sides at once (signals and the API):
// they are serialised, and every listener still accepts afterwards.
func TestBackToBackReloadsKeepEveryListener(t *testing.T) {
	srv, c, _ := startLifecycle(t)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for side := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if err := srv.Reload(parse(t, c.yaml(1+(i+side)%2))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	tcp := dialMail(t, c.ports[0])
	tcp.send("x")
	tcp.expect("echo x")
	dialMail(t, c.ports[1]).expect("220 ")
	dialMail(t, c.ports[2]).expect("* OK")
	h := dialMail(t, c.ports[3])
	fmt.Fprintf(h.c, "GET /owa/ HTTP/1.1\r\nHost: mail.example.com\r\n\r\n")
	if resp, err := http.ReadResponse(h.br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("https after reloads: %v %v", resp, err)
	}
}

// A drain that comes in while reloads are being built is never lost.
func TestDrainDuringReloadSurvives(t *testing.T) {
	srv, c, _ := startLifecycle(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 30 {
			if err := srv.Reload(parse(t, c.yaml(1+i%2))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	if _, err := srv.SetBackendState("mx", proxy.Draining); err != nil {
		t.Fatal(err)
	}
	<-done
	for _, be := range srv.backendsOf("smtp") {
		if be.Name == "mx" && be.Admin() != proxy.Draining {
			t.Fatalf("mx is %s after the reloads: the drain was lost", be.Admin())
		}
	}
}

// A back-end the new configuration no longer has loses its sessions after
// reload_grace; the others keep theirs.
func TestReloadEndsSessionsOfRemovedBackendAfterGrace(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	defer a.Close()
	defer b.Close()
	port := wiretest.FreeAddr(t)
	yaml := `
admin: {listen: "off"}
log: {level: error}
reload_grace: 500ms
backends: {a: {address: %q}, b: {address: %q}}
listeners: [{name: main, listen: %q, backends: [%s], balance: least-conn}]
`
	srv := startServer(t, fmt.Sprintf(yaml, a.Addr(), b.Addr(), port, "a, b"))
	var onA, onB *line
	for onA == nil || onB == nil {
		l := dialMail(t, port)
		l.send("who")
		switch s := l.expect(""); {
		case strings.HasPrefix(s, "a "):
			onA = l
		case strings.HasPrefix(s, "b "):
			onB = l
		}
	}
	if err := srv.Reload(parse(t, fmt.Sprintf(yaml, a.Addr(), b.Addr(), port, "a"))); err != nil {
		t.Fatal(err)
	}
	onB.send("still here")
	onB.expect("b still here") // within the grace it goes on
	waitFor(t, func() bool {
		onB.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := onB.br.ReadByte()
		return err != nil && !isTimeout(err)
	})
	onA.send("kept")
	onA.expect("a kept")
}

// backendsOf returns the back-ends of the running listener of that name.
func (s *Server) backendsOf(name string) []*proxy.Backend {
	for _, l := range s.snapshot() {
		if l.cfg.Name == name {
			return l.pool.Backends
		}
	}
	return nil
}

// A listener the new configuration no longer has keeps its sessions for
// reload_grace, then tells them goodbye in their protocol: an idle SMTP
// session gets its 421 only after the grace.
func TestReloadEndsSessionsOfRemovedListenerAfterGrace(t *testing.T) {
	mx := smtptest.NewServer("mx")
	defer mx.Close()
	keep, gone := wiretest.FreeAddr(t), wiretest.FreeAddr(t)
	yaml := `
admin: {listen: "off"}
log: {level: error}
reload_grace: 2s
backends: {mx: {address: %q}}
listeners:
  - {name: keep, protocol: smtp, listen: %q, backends: [mx]}
%s`
	srv := startServer(t, fmt.Sprintf(yaml, mx.Addr, keep, fmt.Sprintf("  - {name: gone, protocol: smtp, listen: %q, backends: [mx]}\n", gone)))
	c := dialMail(t, gone)
	c.expect("220 ")
	c.send("EHLO client.example")
	c.expect("250 ")
	start := time.Now()
	if err := srv.Reload(parse(t, fmt.Sprintf(yaml, mx.Addr, keep, ""))); err != nil {
		t.Fatal(err)
	}
	c.send("NOOP")
	c.expect("250 ") // within the grace the session goes on
	c.expect("421 ")
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("goodbye after %s, before reload_grace (2s)", d)
	}
}
