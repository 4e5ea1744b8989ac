package https

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
)

// echoBackend answers every request with its own head lines (as they
// reached the back-end) and body, on a keep-alive connection, naming
// itself in X-Backend.
func echoBackend(t testing.TB, name string) *backend {
	return rawBackend(t, "127.0.0.1", func(c net.Conn, br *bufio.Reader) {
		for {
			lines, body, ok := readRequest(br)
			if !ok {
				return
			}
			text := strings.Join(lines, "\n") + "\n--\n" + body
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Backend: %s\r\nContent-Length: %d\r\n\r\n%s", name, len(text), text)
		}
	})
}

// readRequest reads one request on the back-end side: head lines as sent,
// and a Content-Length or chunked body (chunk framing kept verbatim).
func readRequest(br *bufio.Reader) (lines []string, body string, ok bool) {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, "", false
		}
		line = strings.TrimSuffix(line, "\r\n")
		if line == "" {
			break
		}
		lines = append(lines, line)
	}
	for _, l := range lines {
		name, v, _ := strings.Cut(l, ":")
		switch strings.ToLower(name) {
		case "content-length":
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			b := make([]byte, n)
			if _, err := io.ReadFull(br, b); err != nil {
				return nil, "", false
			}
			return lines, string(b), true
		case "transfer-encoding":
			var sb strings.Builder
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return nil, "", false
				}
				sb.WriteString(line)
				if line == "\r\n" && strings.HasSuffix(sb.String(), "0\r\n\r\n") {
					return lines, sb.String(), true
				}
			}
		}
	}
	return lines, "", true
}

// echoed splits an echo body into the head lines the back-end saw and the
// body.
func echoed(body string) (lines []string, rest string) {
	head, rest, _ := strings.Cut(body, "\n--\n")
	return strings.Split(head, "\n"), rest
}

func TestHeaderCaseBothWays(t *testing.T) {
	be := rawBackend(t, "127.0.0.1", func(c net.Conn, br *bufio.Reader) {
		lines, _, _ := readRequest(br)
		// The back-end reports which request header lines reached it as
		// sent, and answers with names Outlook expects in exact case.
		seen := strconv.FormatBool(hasLine(lines, "X-AnchorMailbox: alice@example.com") && hasLine(lines, "MS-ASProtocolVersion: 14.1"))
		io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM\r\nWWW-Authenticate: Negotiate\r\n"+
			"X-MS-Custom: yes\r\nx-lower-case: kept\r\nX-Seen: "+seen+"\r\nContent-Length: 0\r\n\r\n")
	})
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	send(t, c, "POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: mail.example.com\r\nX-AnchorMailbox: alice@example.com\r\n"+
		"MS-ASProtocolVersion: 14.1\r\nContent-Length: 0\r\n\r\n")
	lines := rawHead(t, br)
	for _, want := range []string{"HTTP/1.1 401 Unauthorized", "WWW-Authenticate: NTLM", "WWW-Authenticate: Negotiate",
		"X-MS-Custom: yes", "x-lower-case: kept", "X-Seen: true"} {
		if !hasLine(lines, want) {
			t.Errorf("response head lacks %q exactly: %q", want, lines)
		}
	}
}

func TestForwardedHeadersFromUntrustedClientReplaced(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	_, body := get(t, c, br, "/owa/", "X-Forwarded-For: 203.0.113.66", "x-real-ip: 203.0.113.66",
		"X-Forwarded-Proto: https", "Forwarded: for=203.0.113.66")
	lines, _ := echoed(body)
	// A client cannot claim another address: what it sent is dropped and
	// gatehouse says who connected.
	for _, l := range lines {
		if strings.Contains(l, "203.0.113.66") {
			t.Errorf("spoofed header reached the back-end: %q", l)
		}
	}
	for _, want := range []string{"X-Forwarded-For: 127.0.0.1", "X-Real-IP: 127.0.0.1", "X-Forwarded-Proto: http", "Host: mail.example.com"} {
		if !hasLine(lines, want) {
			t.Errorf("back-end did not see %q: %q", want, lines)
		}
	}
}

func TestForwardedHeadersFromTrustedProxyExtended(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr), Config: Config{TrustedForwarders: []string{"127.0.0.0/8"}}})
	c, br := dial(t, addr)
	_, body := get(t, c, br, "/owa/", "X-Forwarded-For: 198.51.100.7", "X-Real-IP: 198.51.100.7", "X-Forwarded-Proto: https")
	lines, _ := echoed(body)
	for _, want := range []string{"X-Forwarded-For: 198.51.100.7, 127.0.0.1", "X-Real-IP: 198.51.100.7", "X-Forwarded-Proto: https"} {
		if !hasLine(lines, want) {
			t.Errorf("back-end did not see %q: %q", want, lines)
		}
	}
}

func TestHopByHopHeadersStripped(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	_, body := get(t, c, br, "/ews/", "Connection: keep-alive, X-Hop", "Keep-Alive: timeout=5", "X-Hop: private",
		"TE: trailers", "Proxy-Authorization: Basic eDp5", "X-End-To-End: kept")
	lines, _ := echoed(body)
	for _, l := range lines {
		name, _, _ := strings.Cut(strings.ToLower(l), ":")
		switch name {
		case "connection", "keep-alive", "x-hop", "te", "proxy-authorization":
			t.Errorf("hop-by-hop header reached the back-end: %q", l)
		}
	}
	if !hasLine(lines, "X-End-To-End: kept") {
		t.Errorf("end-to-end header lost: %q", lines)
	}
}

func TestKeepAliveBothSides(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	for i := range 5 {
		resp, body := get(t, c, br, fmt.Sprintf("/owa/%d", i))
		if lines, _ := echoed(body); resp.StatusCode != 200 || lines[0] != fmt.Sprintf("GET /owa/%d HTTP/1.1", i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, lines)
		}
	}
	// Five requests of one client connection, one back-end connection.
	if n := be.connections(); n != 1 {
		t.Errorf("back-end accepted %d connections, want 1", n)
	}
}

func TestChunkedBodiesVerbatim(t *testing.T) {
	be := rawBackend(t, "127.0.0.1", func(c net.Conn, br *bufio.Reader) {
		_, body, _ := readRequest(br)
		// Answer chunked too, with an extension and a trailer.
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"+
			"%x;ext=1\r\n%s\r\n0\r\nX-Sum: 42\r\n\r\n", len(body), body)
	})
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	reqBody := "5\r\nhello\r\n6;name=v\r\n world\r\n0\r\n\r\n"
	send(t, c, "POST /mapi/emsmdb/ HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n"+reqBody)
	lines := rawHead(t, br)
	if !hasLine(lines, "Transfer-Encoding: chunked") {
		t.Fatalf("response head: %q", lines)
	}
	want := fmt.Sprintf("%x;ext=1\r\n%s\r\n0\r\nX-Sum: 42\r\n\r\n", len(reqBody), reqBody)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
		t.Errorf("chunked response body %q (%v), want %q", got, err, want)
	}
}

func TestRefusedRequests(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	for _, tc := range []struct {
		name, request string
		status        int
	}{
		{"content-length and chunked", "POST /owa/ HTTP/1.1\r\nHost: m\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"two content-lengths", "POST /owa/ HTTP/1.1\r\nHost: m\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
		{"signed content-length", "POST /owa/ HTTP/1.1\r\nHost: m\r\nContent-Length: +5\r\n\r\nhello", 400},
		{"gzip not chunked last", "POST /owa/ HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
		{"chunked on HTTP/1.0", "POST /owa/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"space before colon", "GET /owa/ HTTP/1.1\r\nHost : m\r\n\r\n", 400},
		{"folded header", "GET /owa/ HTTP/1.1\r\nHost: m\r\nX-A: 1\r\n  2\r\n\r\n", 400},
		{"no host", "GET /owa/ HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET /owa/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"dot segments", "GET /owa/../ecp/ HTTP/1.1\r\nHost: m\r\n\r\n", 400},
		{"encoded dot segments", "GET /owa/%2e%2e/ecp/ HTTP/1.1\r\nHost: m\r\n\r\n", 400},
		{"connect", "CONNECT mail:443 HTTP/1.1\r\nHost: mail:443\r\n\r\n", 405},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
		{"bare CR", "GET /owa/ HTTP/1.1\r\nHost: m\rX: y\r\n\r\n", 400},
		{"huge header", "GET /owa/ HTTP/1.1\r\nHost: m\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dial(t, addr)
			send(t, c, tc.request)
			resp, _ := response(t, br, "GET")
			if resp.StatusCode != tc.status || !resp.Close {
				t.Errorf("status %d close %v, want %d and close", resp.StatusCode, resp.Close, tc.status)
			}
		})
	}
	if n := be.connections(); n != 0 {
		t.Errorf("%d refused requests reached the back-end", n)
	}
}

func TestClassify(t *testing.T) {
	for target, want := range map[string]string{
		"/owa/":                                 OWA,
		"/OWA":                                  OWA,
		"/%6Fwa/auth.owa":                       OWA,
		"/ecp/default.aspx":                     ECP,
		"/EWS/Exchange.asmx":                    EWS,
		"/ews":                                  EWS,
		"/Microsoft-Server-ActiveSync?Cmd=Ping": ActiveSync,
		"/microsoft-server-activesync/default.eas":  ActiveSync,
		"/rpc/rpcproxy.dll?mbx@example.com:6001":    RPC,
		"/RpcWithCert/rpcproxy.dll?x:6001":          RPC,
		"/mapi/emsmdb/?MailboxId=a@b":               MAPI,
		"/Autodiscover/Autodiscover.xml":            Autodiscover,
		"/autodiscover/autodiscover.json?Email=a@b": Autodiscover,
		"/OAB/1234/oab.xml":                         OAB,
		"/PowerShell/":                              PowerShell,
		"/":                                         Default,
		"/owax/":                                    Default,
		"/favicon.ico":                              Default,
		"?x":                                        Default,
		"/%65cp/x":                                  ECP, // IIS decodes before it routes
		"/ecp%2fx":                                  ECP,
		"/owa\\..\\ecp/":                            Default, // refused, never OWA
		"/owa/..%5cecp/":                            Default,
		"//ecp/x":                                   ECP, // nginx merges slashes
		"///PowerShell/":                            PowerShell,
		"/%2fecp/x":                                 ECP,
		"//":                                        Default,
		"//ecp./x":                                  Default, // refused
	} {
		if got := Classify(target); got != want {
			t.Errorf("Classify(%q) = %s, want %s", target, got, want)
		}
	}
}

func TestRootRedirect(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr)})
	c, br := dial(t, addr)
	resp, _ := get(t, c, br, "/")
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "/owa/" {
		t.Fatalf("GET / = %d to %q, want 302 to /owa/", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The connection stays usable after a redirect.
	if resp, _ := get(t, c, br, "/owa/"); resp.StatusCode != 200 {
		t.Errorf("GET /owa/ after the redirect = %d", resp.StatusCode)
	}
}

func TestPlainListenerRedirectsToHTTPS(t *testing.T) {
	be := echoBackend(t, "a")
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be.addr), Config: Config{RedirectHTTPS: true}})
	c, br := dial(t, addr)
	resp, _ := get(t, c, br, "/owa/?a=1")
	if resp.StatusCode != 308 || resp.Header.Get("Location") != "https://mail.example.com/owa/?a=1" {
		t.Errorf("GET http://…/owa/?a=1 = %d to %q, want 308 to https://mail.example.com/owa/?a=1",
			resp.StatusCode, resp.Header.Get("Location"))
	}
	if n := be.connections(); n != 0 {
		t.Errorf("redirected request reached the back-end")
	}
	// A listener whose https port is not 443 names it.
	other := serve(t, &Frontend{Pool: newPool("web8080", "a="+be.addr), Config: Config{RedirectHTTPS: true, HTTPSPort: 8443}})
	c, br = dial(t, other)
	if resp, _ := get(t, c, br, "/owa/"); resp.Header.Get("Location") != "https://mail.example.com:8443/owa/" {
		t.Errorf("with https_port 8443: Location %q", resp.Header.Get("Location"))
	}
}
