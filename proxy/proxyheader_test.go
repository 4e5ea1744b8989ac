//go:build linux

package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// recorder hands each accepted ClientConn to the test, then lets next
// serve it.
type recorder struct {
	next Handler
	seen chan *ClientConn
}

func (h *recorder) ServeConn(ctx context.Context, conn net.Conn) {
	h.seen <- conn.(*ClientConn)
	h.next.ServeConn(ctx, conn)
}

// proxyAwareServer runs the layer-4 frontend with PROXY headers of version
// out towards a PROXY-aware back-end, trusting the given upstreams, and
// records every accepted connection.
func proxyAwareServer(t *testing.T, name string, out byte, trusted ...string) (addr string, seen chan *ClientConn) {
	t.Helper()
	be := startProxyAware(t, "pp")
	seen = make(chan *ClientConn, 4)
	tcp := &TCP{Pool: dialPool(name, time.Second, NewBackend("pp", be.Addr(), 1)), Link: Link{ProxyVersion: out, Log: quiet}}
	srv := &Server{Name: name, Handler: &recorder{next: tcp, seen: seen}, Log: quiet, ProxyHeaderTimeout: 300 * time.Millisecond}
	for _, p := range trusted {
		srv.Trusted = append(srv.Trusted, netip.MustParsePrefix(p))
	}
	return startProxy(t, srv), seen
}

func accepted(t *testing.T, seen chan *ClientConn) *ClientConn {
	t.Helper()
	select {
	case c := <-seen:
		return c
	case <-time.After(wait):
		t.Fatal("handler never got the connection")
	}
	return nil
}

// The back-end learns the real client from a v1 or v2 header ahead of the
// client's first byte.
func TestProxyHeaderToBackend(t *testing.T) {
	for _, v := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			addr, seen := proxyAwareServer(t, fmt.Sprintf("pp-out-v%d", v), v)
			c := connect(t, addr)
			want := fmt.Sprintf("pp v%d %s", v, c.conn.LocalAddr())
			if got := c.banner(t); got != want {
				t.Errorf("back-end greeted %q, want %q", got, want)
			}
			c.mustEcho(t, "EHLO client.example")
			if h := accepted(t, seen).Header; h != nil {
				t.Errorf("untrusted-by-default client has inbound header %v", h)
			}
		})
	}
}

// An upstream load balancer in the trusted range sends a header: the
// client it names becomes RemoteAddr and reaches the back-end in our own
// header, and the bytes the upstream sent right after the header (in the
// same packet) are not lost.
func TestTrustedProxyHeaderHonoured(t *testing.T) {
	src := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 40000}
	dst := &net.TCPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 993}
	for _, v := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			addr, seen := proxyAwareServer(t, fmt.Sprintf("pp-in-v%d", v), 2, "127.0.0.1/32")
			c := connect(t, addr)
			raw, err := proxyproto.HeaderProxyFromAddrs(v, src, dst).Format()
			if err != nil {
				t.Fatal(err)
			}
			c.conn.Write(append(raw, "a1 CAPABILITY\n"...))

			if got, want := c.banner(t), "pp v2 192.0.2.10:40000"; got != want {
				t.Errorf("back-end greeted %q, want %q", got, want)
			}
			if line, err := c.readLine(); err != nil || line != "a1 CAPABILITY" {
				t.Errorf("bytes after the header came back as %q, %v", line, err)
			}
			conn := accepted(t, seen)
			if got := conn.RemoteAddr().String(); got != src.String() {
				t.Errorf("RemoteAddr %s, want the header's %s", got, src)
			}
			if conn.Header == nil || conn.Header.Version != v {
				t.Errorf("Header %+v, want the v%d header", conn.Header, v)
			}
		})
	}
}

// A health check through the upstream sends a LOCAL header: it is
// accepted, and the connection keeps the socket's address.
func TestTrustedLocalHeader(t *testing.T) {
	addr, seen := proxyAwareServer(t, "pp-local", 1, "127.0.0.0/8")
	c := connect(t, addr)
	if err := WriteProxyHeader(c.conn, 2, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := c.banner(t), "pp v1 "+c.conn.LocalAddr().String(); got != want {
		t.Errorf("back-end greeted %q, want %q", got, want)
	}
	if conn := accepted(t, seen); conn.Header == nil || conn.Header.Command != proxyproto.LOCAL {
		t.Errorf("Header %+v, want LOCAL", conn.Header)
	}
}

// A client outside the trusted range cannot claim another address: its
// header is only data, the back-end is told the socket's address, then
// sees the forged line as the client's first bytes.
func TestUntrustedProxyHeaderIsData(t *testing.T) {
	addr, seen := proxyAwareServer(t, "pp-untrusted", 1, "127.0.0.2/32")
	c := connect(t, addr)
	forged := "PROXY TCP4 192.0.2.10 198.51.100.1 40000 25"
	io.WriteString(c.conn, forged+"\n")

	if got, want := c.banner(t), "pp v1 "+c.conn.LocalAddr().String(); got != want {
		t.Errorf("back-end greeted %q, want %q", got, want)
	}
	if line, err := c.readLine(); err != nil || line != forged {
		t.Errorf("forged header came back as %q, %v; want it as data", line, err)
	}
	conn := accepted(t, seen)
	if got := conn.RemoteAddr().String(); got != c.conn.LocalAddr().String() {
		t.Errorf("RemoteAddr %s, want the socket's %s", got, c.conn.LocalAddr())
	}
	if conn.Header != nil {
		t.Errorf("Header %+v from an untrusted client", conn.Header)
	}
}

// A trusted upstream must send its header: one that stays silent past
// ProxyHeaderTimeout, or speaks the protocol straight away, is cut off
// before any handler runs, and the refusal is counted.
func TestTrustedClientWithoutHeaderRefused(t *testing.T) {
	for _, tc := range []struct {
		name, send string
		minWait    time.Duration
	}{
		{"silent", "", 200 * time.Millisecond},
		{"no-header", "EHLO lb.example\r\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "pp-required-" + tc.name
			addr, seen := proxyAwareServer(t, name, 0, "127.0.0.1/32")
			before := testutil.ToFloat64(refusedTotal.WithLabelValues(name, "proxy_header"))
			c := connect(t, addr)
			start := time.Now()
			io.WriteString(c.conn, tc.send)
			c.expectClosed(t)
			if took := time.Since(start); took < tc.minWait || took > 2*time.Second {
				t.Errorf("closed after %v, want between %v and 2s", took, tc.minWait)
			}
			select {
			case <-seen:
				t.Error("handler ran for a connection without a header")
			default:
			}
			counted := func() bool {
				return testutil.ToFloat64(refusedTotal.WithLabelValues(name, "proxy_header"))-before == 1
			}
			if !eventually(time.Second, counted) {
				t.Error("refusal not counted once in gatehouse_sessions_refused_total")
			}
		})
	}
}

// A v1 header longer than the specification's 107 bytes is refused
// without reading on.
func TestReadProxyHeaderTooLong(t *testing.T) {
	near, far := tcpPair(t)
	go io.WriteString(near, "PROXY TCP4 192.0.2.10 198.51.100.1 40000 25"+string(make([]byte, 100))+"\r\n")
	if _, err := ReadProxyHeader(far, time.Second); err == nil {
		t.Error("a 150-byte v1 header was accepted")
	}
}

func TestProxyVersion(t *testing.T) {
	for in, want := range map[string]byte{"": 0, "none": 0, "v1": 1, "v2": 2} {
		if got, err := ProxyVersion(in); err != nil || got != want {
			t.Errorf("ProxyVersion(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ProxyVersion("2"); err == nil {
		t.Error(`ProxyVersion("2") accepted`)
	}
}
