//go:build linux

package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/imap"
	"github.com/gatehouse-proxy/gatehouse/protocols/imap/imaptest"
	"github.com/gatehouse-proxy/gatehouse/protocols/pop3"
	"github.com/gatehouse-proxy/gatehouse/protocols/pop3/pop3test"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

const frontendWait = 10 * time.Second

var quietLog = slog.New(slog.DiscardHandler)

// The throttle through real IMAP and POP3 frontends sharing it: an
// attacker guessing alice's password over IMAP from 127.0.0.1 is blocked
// there in IMAP and in POP3, while alice logs in from 127.0.0.2 in both.
func TestThrottleThroughFrontends(t *testing.T) {
	ib := imaptest.NewUnstartedServer("imap1")
	ib.AddUser("alice", "demo")
	ib.Start()
	t.Cleanup(ib.Close)
	pb := pop3test.NewUnstartedServer("pop1")
	pb.Mailboxes = map[string]*pop3test.Mailbox{"alice": {Password: "demo"}}
	pb.Start()
	t.Cleanup(pb.Close)

	th := &proxy.Throttle{Limit: 3, Delay: time.Millisecond}
	imapAddr := serveFrontend(t, &imap.Frontend{Pool: onePool("imap", ib.Name, ib.Addr), Link: proxy.Link{Throttle: th, Log: quietLog}})
	pop3Addr := serveFrontend(t, &pop3.Frontend{Pool: onePool("pop3", pb.Name, pb.Addr), Link: proxy.Link{Throttle: th, Log: quietLog}})

	for range 3 {
		c := dialLines(t, "127.0.0.1", imapAddr)
		c.expect("* OK")
		c.send("a LOGIN alice wrong")
		c.expect("a NO [AUTHENTICATIONFAILED]")
	}
	c := dialLines(t, "127.0.0.1", imapAddr)
	c.expect("* OK")
	c.send("a LOGIN alice demo")
	c.expect("a NO [UNAVAILABLE] Too many failed logins")
	p := dialLines(t, "127.0.0.1", pop3Addr)
	p.expect("+OK")
	p.send("USER alice", "PASS demo")
	p.expect("+OK")
	p.expect("-ERR [SYS/TEMP] Too many failed logins")

	c = dialLines(t, "127.0.0.2", imapAddr)
	c.expect("* OK")
	c.send("a LOGIN alice demo")
	c.expect("a OK")
	p = dialLines(t, "127.0.0.2", pop3Addr)
	p.expect("+OK")
	p.send("USER alice", "PASS demo")
	p.expect("+OK")
	p.expect("+OK")
}

func onePool(name, backend, addr string) *proxy.Pool {
	return &proxy.Pool{Name: name, ConnectTimeout: frontendWait, Backends: []*proxy.Backend{proxy.NewBackend(backend, addr, 1)}}
}

// serveFrontend runs h behind a proxy.Server on 127.0.0.1:0 until the test ends.
func serveFrontend(t *testing.T, h proxy.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &proxy.Server{Name: "throttle-test", Handler: h, Log: quietLog}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), frontendWait)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

// lineConn is a line-oriented client bounded in time.
type lineConn struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dialLines(t *testing.T, src, addr string) *lineConn {
	t.Helper()
	d := net.Dialer{Timeout: frontendWait, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(frontendWait))
	t.Cleanup(func() { c.Close() })
	return &lineConn{t: t, Conn: c, r: bufio.NewReader(c)}
}

func (c *lineConn) send(lines ...string) {
	c.t.Helper()
	if _, err := c.Write([]byte(strings.Join(lines, "\r\n") + "\r\n")); err != nil {
		c.t.Fatal(err)
	}
}

// expect reads lines until one starts with prefix, skipping untagged
// IMAP data; any other line fails the test.
func (c *lineConn) expect(prefix string) {
	c.t.Helper()
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("waiting for %q: %v", prefix, err)
		}
		if strings.HasPrefix(line, prefix) {
			return
		}
		if !strings.HasPrefix(line, "* ") {
			c.t.Fatalf("got %q, want %q", line, prefix)
		}
	}
}

// Behind a trusted load balancer, the client addresses come in PROXY
// headers, IPv6 ones too. A guesser that gives every attempt a fresh
// address of its /64 is blocked after Limit failures all the same, while
// alice, from another /64, logs in.
func TestThrottleIPv6HopperThroughIMAP(t *testing.T) {
	ib := imaptest.NewUnstartedServer("imap1")
	ib.AddUser("alice", "demo")
	ib.Start()
	t.Cleanup(ib.Close)
	th := &proxy.Throttle{Limit: 3, Delay: time.Millisecond}
	fe := &imap.Frontend{Pool: onePool("imap", ib.Name, ib.Addr), Link: proxy.Link{Throttle: th, Log: quietLog}}
	addr := serveFrontendBehind(t, fe, netip.MustParsePrefix("127.0.0.1/32"))

	login := func(client, pass, want string) {
		t.Helper()
		c := dialLines(t, "127.0.0.1", addr)
		fmt.Fprintf(c, "PROXY TCP6 %s 2001:db8::143 40000 143\r\n", client)
		c.expect("* OK")
		c.send("a LOGIN alice " + pass)
		c.expect(want)
	}
	for i := range 3 {
		login(fmt.Sprintf("2001:db8:0:66::%x", i+1), "wrong", "a NO [AUTHENTICATIONFAILED]")
	}
	login("2001:db8:0:66::99", "demo", "a NO [UNAVAILABLE] Too many failed logins")
	login("2001:db8:0:77::1", "demo", "a OK")
}

// serveFrontendBehind is serveFrontend with upstreams that send PROXY
// headers.
func serveFrontendBehind(t *testing.T, h proxy.Handler, trusted ...netip.Prefix) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &proxy.Server{Name: "throttle-test", Handler: h, Log: quietLog, Trusted: trusted}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), frontendWait)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}
