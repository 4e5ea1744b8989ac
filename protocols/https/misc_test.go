package https

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

func TestExpectContinueRelayed(t *testing.T) {
	be := httpBackend(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // net/http sends 100 Continue on this read
		fmt.Fprintf(w, "got %q", body)
	}))
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be)})
	c, br := dial(t, addr)
	send(t, c, "POST /ews/ HTTP/1.1\r\nHost: m\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	// The client waits for the back-end's go-ahead before the body.
	if head := rawHead(t, br); len(head) != 1 || head[0] != "HTTP/1.1 100 Continue" {
		t.Fatalf("before the body: %q, want the back-end's 100 Continue", head)
	}
	send(t, c, "hello")
	if resp, body := response(t, br, "POST"); resp.StatusCode != 200 || body != `got "hello"` {
		t.Errorf("after the body: %d %q", resp.StatusCode, body)
	}
}

func TestHTTP10ClientGetsChunkedResponseDecoded(t *testing.T) {
	be := rawBackend(t, "127.0.0.1", func(c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	})
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	send(t, c, "GET /owa/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	head := rawHead(t, br)
	body, err := io.ReadAll(br)
	// HTTP/1.0 knows no chunked coding: the data comes plain, ended by close.
	if err != nil || string(body) != "hello world" || !hasLine(head, "Connection: close") || hasLine(head, "Transfer-Encoding: chunked") {
		t.Errorf("HTTP/1.0 client: head %q body %q (%v)", head, body, err)
	}
}

func TestHTTP10KeepAlive(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	for range 2 {
		send(t, c, "GET /owa/ HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: m\r\n\r\n")
		head := rawHead(t, br)
		if !hasLine(head, "Connection: keep-alive") {
			t.Fatalf("HTTP/1.0 keep-alive response lacks Connection: keep-alive: %q", head)
		}
		var n int
		for _, l := range head {
			fmt.Sscanf(l, "Content-Length: %d", &n)
		}
		io.ReadFull(br, make([]byte, n))
	}
}

func TestNoBackendAnswers503(t *testing.T) {
	addr := serve(t, &Frontend{Pool: newPool("web", "a=127.0.0.1:1")})
	c, br := dial(t, addr)
	resp, _ := get(t, c, br, "/owa/")
	if resp.StatusCode != 503 || resp.Close {
		t.Errorf("no back-end: %d close=%v, want 503 and the connection kept", resp.StatusCode, resp.Close)
	}
}

func TestFailoverBeforeAnyByteSent(t *testing.T) {
	be := echoBackend(t, "live")
	// The first back-end refuses connections: the request goes to the next,
	// since nothing of it reached the first.
	pool := newPool("web", "dead=127.0.0.1:1", "live="+be.addr)
	pool.Policy = &proxy.WeightedRoundRobin{}
	addr := serve(t, &Frontend{Pool: pool})
	for range 4 {
		c, br := dial(t, addr)
		if resp, _ := get(t, c, br, "/owa/"); resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "live" {
			t.Errorf("with a dead back-end: %d from %q", resp.StatusCode, resp.Header.Get("X-Backend"))
		}
		c.Close()
	}
}

func TestNoRetryAfterBytesSent(t *testing.T) {
	var first *backend
	first = rawBackend(t, "127.0.0.1", func(c net.Conn, br *bufio.Reader) {
		readRequest(br) // the whole request arrives, then the back-end dies
	})
	second := echoBackend(t, "b")
	pool := newPool("web", "a="+first.addr, "b="+second.addr)
	pool.Policy = &proxy.WeightedRoundRobin{}
	addr := serve(t, &Frontend{Pool: pool})
	c, br := dial(t, addr)
	send(t, c, "POST /mapi/emsmdb/ HTTP/1.1\r\nHost: m\r\nX-RequestType: Execute\r\nContent-Length: 3\r\n\r\nabc")
	// A MAPI request that reached a back-end is never replayed on another:
	// the client gets the failure.
	if resp, _ := response(t, br, "POST"); resp.StatusCode != 502 {
		t.Errorf("back-end died after the request: %d, want 502", resp.StatusCode)
	}
	if n := second.connections(); n != 0 {
		t.Errorf("the request was retried on the second back-end")
	}
}

func TestThrottleCountsFailedLogins(t *testing.T) {
	s, _ := exchangeFarm(t, 1)
	th := &proxy.Throttle{Limit: 2, Delay: time.Millisecond}
	addr := serve(t, &Frontend{Pool: newPool("web", "cas-a="+s[0].Addr), Link: proxy.Link{Throttle: th}})
	bad := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice:wrong"))
	for i := range 2 {
		c, br := dial(t, addr)
		if resp, _ := get(t, c, br, "/ews/", bad); resp.StatusCode != 401 {
			t.Fatalf("attempt %d: %d, want 401", i, resp.StatusCode)
		}
	}
	// Two failures reach the limit: the next try is refused at the edge,
	// even with the right password.
	c, br := dial(t, addr)
	good := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice:demo"))
	if resp, _ := get(t, c, br, "/ews/", good); resp.StatusCode != 429 {
		t.Errorf("after the limit: %d, want 429", resp.StatusCode)
	}
}

func TestUpgradeTunnel(t *testing.T) {
	be := rawBackend(t, "127.0.0.1", func(c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		line, _ := br.ReadString('\n')
		io.WriteString(c, "echo:"+line)
	})
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	send(t, c, "GET /owa/notify HTTP/1.1\r\nHost: m\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if head := rawHead(t, br); head[0] != "HTTP/1.1 101 Switching Protocols" || !hasLine(head, "Upgrade: websocket") {
		t.Fatalf("upgrade answered %q", head)
	}
	send(t, c, "hi\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo:hi\n" {
		t.Errorf("through the tunnel: %q, %v", line, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Services: map[string]Service{"webmail": {}}}, "services.webmail: unknown service"},
		{Config{Services: map[string]Service{OWA: {Affinity: "sticky"}}}, "services.owa.affinity"},
		{Config{Services: map[string]Service{RPC: {TLS: TLSPassthrough}}}, "services.rpc.sni"},
		{Config{Services: map[string]Service{OWA: {SNI: []string{"a"}}}}, "services.owa.sni"},
		{Config{TrustedForwarders: []string{"10.0.0.0/33"}}, "trusted_forwarders[0]"},
		{Config{RootRedirect: "owa"}, "root_redirect"},
		{Config{CookieName: "bad name"}, "cookie_name"},
		{Config{Services: map[string]Service{
			OWA: {TLS: TLSPassthrough, SNI: []string{"x.example"}},
			ECP: {TLS: TLSPassthrough, SNI: []string{"X.example"}},
		}}, "already passed through"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error about %s", err, tc.want)
		}
	}
	ok := Config{TrustedForwarders: []string{"10.0.0.1", "192.168.0.0/16"},
		Services: map[string]Service{RPC: {Affinity: AffinityRPCChannel, Idle: time.Hour}}}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	ok.SetDefaults()
	if ok.KeepAlive != 10*time.Minute || ok.Services[RPC].TLS != TLSTerminate || ok.RootRedirect != "/owa/" {
		t.Errorf("defaults: %+v", ok)
	}
}

func TestDefaultIdleOutlastsExchange(t *testing.T) {
	// Exchange must time out first: ActiveSync heartbeats reach 59 minutes,
	// RPC keep-alives 15, EWS streaming 30, MAPI 5 (plus PENDING every 30 s).
	for svc, atLeast := range map[string]time.Duration{
		ActiveSync: 61 * time.Minute, RPC: 40 * time.Minute, EWS: 35 * time.Minute, MAPI: 10 * time.Minute,
	} {
		if got := DefaultIdle(svc); got < atLeast {
			t.Errorf("DefaultIdle(%s) = %v, want at least %v", svc, got, atLeast)
		}
	}
	// A service's own idle wins; the listener's idle only lengthens the
	// defaults, never cuts ActiveSync's heartbeat.
	f := &Frontend{Config: Config{Services: map[string]Service{EWS: {Idle: time.Minute}}}, Link: proxy.Link{Idle: time.Hour}}
	if f.idle(EWS) != time.Minute || f.idle(ActiveSync) != 61*time.Minute || f.idle(OWA) != time.Hour {
		t.Errorf("idle: ews %v, activesync %v, owa %v", f.idle(EWS), f.idle(ActiveSync), f.idle(OWA))
	}
}

func TestIdleTimeoutEndsSilentRequest(t *testing.T) {
	be := rawBackend(t, "127.0.0.1", func(c net.Conn, br *bufio.Reader) {
		readRequest(br)
		br.ReadByte() // never answers; ends when gatehouse gives up
	})
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr),
		Config: Config{Services: map[string]Service{EWS: {Idle: 300 * time.Millisecond}}}})
	c, br := dial(t, addr)
	start := time.Now()
	resp, _ := get(t, c, br, "/ews/")
	if resp.StatusCode != 502 || time.Since(start) > 2*time.Second {
		t.Errorf("silent back-end: %d after %v, want 502 after the 300 ms idle", resp.StatusCode, time.Since(start))
	}
}

func TestMAPIChunksFlushedAsTheyCome(t *testing.T) {
	next := make(chan struct{})
	be := rawBackend(t, "127.0.0.1", func(c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-RequestType: Execute\r\n\r\n")
		for _, meta := range []string{"PROCESSING\r\n", "PENDING\r\n", "PENDING\r\n", "DONE\r\n"} {
			fmt.Fprintf(c, "%x\r\n%s\r\n", len(meta), meta)
			<-next
		}
		io.WriteString(c, "0\r\n\r\n")
	})
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	send(t, c, "POST /mapi/emsmdb/ HTTP/1.1\r\nHost: m\r\nX-RequestType: Execute\r\nContent-Length: 0\r\n\r\n")
	rawHead(t, br)
	// Each meta-tag chunk reaches Outlook before the server sends the next
	// ([MS-OXCMAPIHTTP] 2.2.7): no buffering in between.
	for _, meta := range []string{"PROCESSING", "PENDING", "PENDING", "DONE"} {
		size, _ := br.ReadString('\n')
		data, _ := br.ReadString('\n')
		br.ReadString('\n')
		if strings.TrimSpace(data) != meta {
			t.Fatalf("chunk %q %q, want %s", size, data, meta)
		}
		next <- struct{}{}
	}
}

func TestPort80AnswersACMEAndRedirectsTheRest(t *testing.T) {
	acme := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, token+".key-authorization")
	})
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("port80", "a="+be.addr), ACME: acme, Config: Config{RedirectHTTPS: true}})
	c, br := dial(t, addr)
	// The ACME server fetches its token over plain HTTP: answered here.
	resp, body := get(t, c, br, "/.well-known/acme-challenge/tok123")
	if resp.StatusCode != 200 || body != "tok123.key-authorization" {
		t.Errorf("challenge: %d %q", resp.StatusCode, body)
	}
	// Everything else is sent to https on the same connection.
	resp, _ = get(t, c, br, "/owa/")
	if resp.StatusCode != 308 || resp.Header.Get("Location") != "https://mail.example.com/owa/" {
		t.Errorf("GET /owa/ on port 80: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if be.connections() != 0 {
		t.Error("a port-80 request reached the back-end")
	}
}
