package https

import (
	"bufio"
	"bytes"
	stdtls "crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestServiceAllowList(t *testing.T) {
	be := echoBackend(t, "a")
	logs := &wiretest.Logs{}
	internal := Service{Allow: []string{"127.0.0.2", "10.0.0.0/8"}}
	f := &Frontend{Name: "allow", Pool: newPool("web", "a="+be.addr),
		Config: Config{Services: map[string]Service{ECP: internal, PowerShell: internal}}, Link: proxy.Link{Log: logs.Logger(-4)},
	}
	srv := &proxy.Server{Name: "allow", Handler: f, Log: quiet,
		Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")}}
	addr := wiretest.Serve(t, srv)
	before := testutil.ToFloat64(requestErrors.WithLabelValues("allow", ECP, "forbidden"))

	// From outside the list: 403, the connection kept (no body), OWA
	// still served on it.
	c, br := dial(t, addr)
	if resp, _ := get(t, c, br, "/ecp/default.aspx"); resp.StatusCode != 403 || resp.Close {
		t.Errorf("ECP from 127.0.0.1: %d (close %v), want 403 on a kept connection", resp.StatusCode, resp.Close)
	}
	if resp, _ := get(t, c, br, "/owa/"); resp.StatusCode != 200 {
		t.Errorf("OWA from 127.0.0.1: %d, want 200", resp.StatusCode)
	}
	if got := testutil.ToFloat64(requestErrors.WithLabelValues("allow", ECP, "forbidden")) - before; got != 1 {
		t.Errorf("forbidden counter rose by %v, want 1", got)
	}
	if lines := logs.Lines("reason=forbidden"); len(lines) != 1 || !strings.Contains(lines[0], "client=127.0.0.1:") {
		t.Errorf("log lines about the refusal: %q", lines)
	}
	// From an address on the list.
	c2, br2 := dialFrom(t, "127.0.0.2", addr)
	if resp, _ := get(t, c2, br2, "/ECP/"); resp.StatusCode != 200 {
		t.Errorf("ECP from 127.0.0.2: %d, want 200", resp.StatusCode)
	}
	// Through a trusted load balancer, the PROXY header's address decides.
	c3, br3 := dialFrom(t, "127.0.0.3", addr)
	send(t, c3, "PROXY TCP4 10.1.2.3 192.0.2.1 40000 443\r\n")
	if resp, _ := get(t, c3, br3, "/powershell/"); resp.StatusCode != 200 {
		t.Errorf("PowerShell from 10.1.2.3 behind the load balancer: %d, want 200", resp.StatusCode)
	}
	c4, br4 := dialFrom(t, "127.0.0.3", addr)
	send(t, c4, "PROXY TCP4 203.0.113.9 192.0.2.1 40000 443\r\n")
	if resp, _ := get(t, c4, br4, "/powershell/"); resp.StatusCode != 403 {
		t.Errorf("PowerShell from 203.0.113.9 behind the load balancer: %d, want 403", resp.StatusCode)
	}
	// Empty segments before the virtual directory do not hide it: nginx
	// (and any server merging slashes) serves "//ecp/" as "/ecp/".
	for _, path := range []string{"//ecp/default.aspx", "///ecp/", "/%2fecp/", "/%2F%2Fpowershell/"} {
		if resp, _ := get(t, c, br, path); resp.StatusCode != 403 {
			t.Errorf("%s from 127.0.0.1: %d, want 403", path, resp.StatusCode)
		}
	}
	// X-Forwarded-For from the client decides nothing.
	c5, br5 := dial(t, addr)
	if resp, _ := get(t, c5, br5, "/ecp/", "X-Forwarded-For: 10.0.0.1"); resp.StatusCode != 403 {
		t.Errorf("ECP claiming X-Forwarded-For 10.0.0.1: %d, want 403", resp.StatusCode)
	}
}

func TestAllowListValidated(t *testing.T) {
	cfg := Config{Services: map[string]Service{ECP: {Allow: []string{"10.0.0.0/8", "internal"}}}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "services.ecp.allow[1]") {
		t.Errorf("Validate() = %v, want an error about services.ecp.allow[1]", err)
	}
}

func TestRefusalsLoggedRateLimited(t *testing.T) {
	be := echoBackend(t, "a")
	logs := &wiretest.Logs{}
	f := &Frontend{Pool: newPool("web", "a="+be.addr), Link: proxy.Link{Log: logs.Logger(-4)}}
	f.refusals.Interval = time.Hour
	addr := serve(t, f)
	bad := func(src string) {
		c, br := dialFrom(t, src, addr)
		send(t, c, "POST /owa/ HTTP/1.1\r\nHost: m\r\nConnection: Content-Length\r\nContent-Length: 0\r\n\r\n")
		if resp, _ := response(t, br, "POST"); resp.StatusCode != 400 {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	}
	for range 5 {
		bad("127.0.0.1")
	}
	bad("127.0.0.2")
	sessionsEnded(t, f) // each logs before it ends
	lines := logs.Lines("request refused")
	if len(lines) != 2 || !strings.Contains(lines[0], "client=127.0.0.1:") || !strings.Contains(lines[1], "client=127.0.0.2:") {
		t.Fatalf("six refusals from two addresses logged as %q, want one line per address", lines)
	}
	for _, want := range []string{"reason=bad_request", "Content-Length"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("refusal line %q lacks %q", lines[0], want)
		}
	}
}

func TestHeaderTimeoutLogged(t *testing.T) {
	be := echoBackend(t, "a")
	logs := &wiretest.Logs{}
	f := &Frontend{Pool: newPool("web", "a="+be.addr),
		Config: Config{HeaderTimeout: 300 * time.Millisecond}, Link: proxy.Link{Log: logs.Logger(-4)},
	}
	f.refusals.Interval = time.Hour
	addr := serve(t, f)
	// Three slow clients from one address: each is cut off, one line says so.
	for range 3 {
		c, br := dial(t, addr)
		send(t, c, "GET /owa/ HTTP/1.1\r\nHost: m\r\nX-Slow: ")
		if _, err := br.ReadByte(); err == nil {
			t.Fatal("a head that never ends was answered")
		}
	}
	eventually(t, wait, "the timeout to be logged", func() bool { return len(logs.Lines("request head timed out")) > 0 })
	lines := logs.Lines("request head timed out")
	if len(lines) != 1 || !strings.Contains(lines[0], "client=127.0.0.1:") || !strings.Contains(lines[0], "reason=header_timeout") {
		t.Errorf("three header timeouts logged as %q, want one line naming the client", lines)
	}
}

func TestWebSocketUpgradeForwarded(t *testing.T) {
	be := rawBackend(t, "127.0.0.1", func(c net.Conn, br *bufio.Reader) {
		lines, _, _ := readRequest(br)
		if !hasLine(lines, "Upgrade: websocket") || !hasLine(lines, "Connection: Upgrade") {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		line, _ := br.ReadString('\n')
		io.WriteString(c, "echo:"+line)
	})
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	send(t, c, "GET /owa/notify HTTP/1.1\r\nHost: m\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	if head := rawHead(t, br); head[0] != "HTTP/1.1 101 Switching Protocols" {
		t.Fatalf("websocket upgrade answered %q", head)
	}
	send(t, c, "hi\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo:hi\n" {
		t.Errorf("through the tunnel: %q, %v", line, err)
	}
}

func TestOtherUpgradesDropped(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	resp, body := get(t, c, br, "/owa/", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAAP__")
	lines, _ := echoed(body)
	if resp.StatusCode != 200 {
		t.Fatalf("h2c upgrade request: %d", resp.StatusCode)
	}
	for _, l := range lines {
		if ll := strings.ToLower(l); strings.HasPrefix(ll, "upgrade") || strings.HasPrefix(ll, "http2-settings") || strings.HasPrefix(ll, "connection") {
			t.Errorf("the back-end got %q", l)
		}
	}
}

func TestUnaskedSwitchingProtocolsRefused(t *testing.T) {
	be := rawBackend(t, "127.0.0.1", func(c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
		io.Copy(io.Discard, br)
	})
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	if resp, _ := get(t, c, br, "/owa/", "Connection: Upgrade", "Upgrade: h2c"); resp.StatusCode != 502 {
		t.Errorf("a 101 nobody asked for became %d, want 502", resp.StatusCode)
	}
}

func TestMalformedChunkCutsBackend(t *testing.T) {
	gotChunk := make(chan struct{})
	ended := make(chan error, 1)
	be := rawBackend(t, "127.0.0.1", func(c net.Conn, br *bufio.Reader) {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				ended <- err
				return
			}
			if line == "hello\r\n" {
				close(gotChunk)
			}
		}
	})
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	send(t, c, "POST /owa/ HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	select {
	case <-gotChunk:
	case <-time.After(wait):
		t.Fatal("the first chunk did not reach the back-end")
	}
	send(t, c, "5;x=\x00\r\nworld\r\n0\r\n\r\n")
	resp, _ := response(t, br, "POST")
	if resp.StatusCode != 400 || !resp.Close {
		t.Errorf("malformed chunk answered %d (close %v), want 400 and close", resp.StatusCode, resp.Close)
	}
	select {
	case err := <-ended:
		if err != io.EOF {
			t.Logf("back-end connection ended with %v", err)
		}
	case <-time.After(wait):
		t.Error("the back-end connection holding a half-framed request was not closed")
	}
}

func TestChannelTableBounded(t *testing.T) {
	var tab channels
	var cookie [16]byte
	for i := range maxChannels + 1000 {
		binary.LittleEndian.PutUint64(cookie[:], uint64(i))
		r := rts{cookie: cookie, in: i%2 == 0}
		tab.attach(r, "ex1")
		tab.detach(r)
	}
	if n := tab.size(); n != maxChannels {
		t.Errorf("%d client-chosen cookies left %d entries, want the cap %d", maxChannels+1000, n, maxChannels)
	}
	binary.LittleEndian.PutUint64(cookie[:], 0)
	if tab.lookup(cookie) != "" {
		t.Error("the oldest cookie outlived the cap")
	}
	binary.LittleEndian.PutUint64(cookie[:], uint64(maxChannels+999))
	if tab.lookup(cookie) != "ex1" {
		t.Error("the newest cookie was forgotten")
	}
}

func TestSilentConnectionsLogged(t *testing.T) {
	be := echoBackend(t, "a")
	logs := &wiretest.Logs{}
	plain := &Frontend{Pool: newPool("web", "a="+be.addr),
		Config: Config{KeepAlive: 300 * time.Millisecond}, Link: proxy.Link{Log: logs.Logger(-4)},
	}
	cert := selfSigned(t)
	tlsFront := &Frontend{Name: "tls", Pool: newPool("web", "a="+be.addr),

		Config: Config{HeaderTimeout: 300 * time.Millisecond}, Link:
		// A connection that never sends a request, and a TLS handshake that
		// never finishes (a record header promising more than comes).
		proxy.Link{Log: logs.Logger(-4), EdgeTLS: &stdtls.Config{Certificates: []stdtls.Certificate{cert}}, TLSMode: proxy.TLSImplicit},
	}

	c, br := dial(t, serve(t, plain))
	if _, err := br.ReadByte(); err == nil {
		t.Error("a silent connection was answered")
	}
	c.Close()
	c, br = dial(t, serve(t, tlsFront))
	send(t, c, "\x16\x03\x01\x01\x00")
	if _, err := br.ReadByte(); err == nil {
		t.Error("an unfinished handshake was answered")
	}
	eventually(t, wait, "both timeouts to be logged", func() bool {
		return len(logs.Lines("reason=no_request")) == 1 && len(logs.Lines("reason=tls_timeout")) == 1
	})
	for _, l := range append(logs.Lines("reason=no_request"), logs.Lines("reason=tls_timeout")...) {
		if !strings.Contains(l, "client=127.0.0.1:") {
			t.Errorf("timeout line without the client: %q", l)
		}
	}
}

// A new connection that sends nothing is closed after header_timeout,
// not keep_alive: otherwise one client could hold descriptors for ten
// minutes each without sending a byte. Between two requests keep_alive
// still rules.
func TestSilentNewConnectionGetsHeaderTimeout(t *testing.T) {
	be := echoBackend(t, "a")
	logs := &wiretest.Logs{}
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr),
		Config: Config{KeepAlive: time.Hour, HeaderTimeout: 300 * time.Millisecond}, Link: proxy.Link{Log: logs.Logger(-4)},
	})
	c, br := dial(t, addr)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Errorf("a silent new connection: %v, want it closed by gatehouse well before keep_alive", err)
	}
	eventually(t, wait, "the timeout to be logged", func() bool {
		return len(logs.Lines("reason=no_request")) == 1
	})
	if l := logs.Lines("reason=no_request"); len(l) == 1 && !strings.Contains(l[0], "waited=300ms") {
		t.Errorf("timeout line: %q, want waited=300ms", l[0])
	}
	c2, br2 := dial(t, addr)
	if resp, _ := get(t, c2, br2, "/owa/"); resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	time.Sleep(900 * time.Millisecond) // three header timeouts, far below keep_alive
	if resp, _ := get(t, c2, br2, "/owa/"); resp.StatusCode != 200 {
		t.Errorf("second request after a pause: %d, want 200 on the kept connection", resp.StatusCode)
	}
}

func TestHeadReserialised(t *testing.T) {
	be := echoBackend(t, "a") // reads CRLF-terminated lines only
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	send(t, c, "GET /owa/ HTTP/1.1\nHost: m\nX-Case-Kept: v\n\n")
	resp, body := response(t, br, "GET")
	lines, _ := echoed(body)
	if resp.StatusCode != 200 || lines[0] != "GET /owa/ HTTP/1.1" || !hasLine(lines, "X-Case-Kept: v") {
		t.Errorf("bare-LF request reached the back-end as %q (%d)", lines, resp.StatusCode)
	}
}

func TestRefusalReadableDespiteUnreadBody(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	// A refused request whose body keeps coming: the 400 must reach the
	// client before the connection closes, not be lost to a reset.
	go func() {
		io.WriteString(c, "POST /owa/ HTTP/1.1\r\nHost: m\r\nConnection: Content-Length\r\nContent-Length: 1048576\r\n\r\n")
		chunk := strings.Repeat("x", 16<<10)
		for range 64 {
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the refusal: %v", err)
	}
	if resp.StatusCode != 400 || !resp.Close {
		t.Errorf("refusal %d (close %v), want 400 and close", resp.StatusCode, resp.Close)
	}
}

// A service passed through by SNI obeys its allow list too: it cannot be
// answered 403 (gatehouse holds no certificate for it), so the client
// gets a TLS access_denied alert and the connection ends.
func TestPassthroughAllowList(t *testing.T) {
	legacy := exchangetest.NewTLSServer("legacy")
	t.Cleanup(legacy.Close)
	web := echoBackend(t, "web")
	logs := &wiretest.Logs{}
	f := &Frontend{
		Name: "pt-allow", Pool: newPool("edge", "web="+web.addr),
		Services: map[string]*proxy.Pool{ECP: newPool("edge/ecp", "legacy="+legacy.Addr)},
		Config: Config{Services: map[string]Service{ECP: {TLS: TLSPassthrough, SNI: []string{"admin.example.com"},
			Allow: []string{"127.0.0.2"}}}}, Link: proxy.Link{Log: logs.Logger(-4)},
	}
	addr := tlsFrontend(t, f)
	before := testutil.ToFloat64(requestErrors.WithLabelValues("pt-allow", ECP, "forbidden"))
	_, err := stdtls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", addr,
		&stdtls.Config{ServerName: "admin.example.com", InsecureSkipVerify: true})
	if err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("passthrough from outside the allow list: %v, want an access denied alert", err)
	}
	if got := testutil.ToFloat64(requestErrors.WithLabelValues("pt-allow", ECP, "forbidden")) - before; got != 1 {
		t.Errorf("forbidden counter rose by %v, want 1", got)
	}
	if lines := logs.Lines("reason=forbidden"); len(lines) != 1 || !strings.Contains(lines[0], "client=127.0.0.1:") {
		t.Errorf("log lines about the refusal: %q", lines)
	}
	// From the allowed address the back-end's own TLS answers.
	d := &net.Dialer{Timeout: wait, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	c, err := stdtls.DialWithDialer(d, "tcp", addr, &stdtls.Config{ServerName: "admin.example.com", InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("passthrough from 127.0.0.2: %v", err)
	}
	defer c.Close()
	if got := c.ConnectionState().PeerCertificates[0]; !bytes.Equal(got.Raw, legacy.Certificate().Raw) {
		t.Errorf("allowed client saw %s, want the back-end's certificate", got.Subject)
	}
}

// IIS hands a header spelled with underscores to applications under the
// same server variable as the hyphenated one (HTTP_X_FORWARDED_FOR), so
// an untrusted client's X_Forwarded_For is dropped like X-Forwarded-For.
func TestUnderscoreForwardedHeadersDropped(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	_, body := get(t, c, br, "/owa/", "X_Forwarded_For: 6.6.6.6", "X_Real_IP: 6.6.6.6", "x-forwarded_proto: http")
	lines, _ := echoed(body)
	for _, l := range lines {
		if strings.Contains(l, "6.6.6.6") || strings.HasPrefix(strings.ToLower(l), "x-forwarded_proto") {
			t.Errorf("the back-end got %q", l)
		}
	}
}

// X-Original-URL and X-Rewrite-URL, with which IIS modules replace the
// path after the proxy routed it, never reach a back-end: "/owa/" with
// "X-Original-URL: /ecp/" must not become an ECP request behind the allow
// list's back.
func TestPathOverrideHeadersDropped(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	_, body := get(t, c, br, "/owa/", "X-Original-URL: /ecp/", "x_rewrite_url: /ecp/", "X-ORIGINAL-URL: /powershell/")
	lines, _ := echoed(body)
	for _, l := range lines {
		if strings.Contains(strings.ToLower(l), "original") || strings.Contains(strings.ToLower(l), "rewrite") {
			t.Errorf("the back-end got %q", l)
		}
	}
}
