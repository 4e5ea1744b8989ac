package exchangetest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestMD4Vectors(t *testing.T) {
	// RFC 1320 appendix A.5.
	for in, want := range map[string]string{
		"":    "31d6cfe0d16ae931b73c59d7e0c089c0",
		"a":   "bde52cb31de33e46245e05fbdbd6fb24",
		"abc": "a448017aaf21d8525fc10ae87aa6729d",
		"12345678901234567890123456789012345678901234567890123456789012345678901234567890": "e33b4ddc9c38f2199c3e7b164fcc0536",
	} {
		if got := hex.EncodeToString(md4([]byte(in))); got != want {
			t.Errorf("md4(%q) = %s, want %s", in, got, want)
		}
	}
}

// loginServer runs a server asking for logins from the demo users.
func loginServer(t *testing.T) *Server {
	t.Helper()
	s := NewUnstartedServer("cas-a")
	s.Users = DemoUsers()
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func TestLoginAsked(t *testing.T) {
	s := loginServer(t)
	resp, err := http.Get(s.URL + "/EWS/Exchange.asmx")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || len(resp.Header.Values("Www-Authenticate")) != 3 {
		t.Errorf("GET without login = %d offering %q, want 401 offering Negotiate, NTLM, Basic",
			resp.StatusCode, resp.Header.Values("Www-Authenticate"))
	}
	// OWA's health page and other vdirs ask nothing.
	if code, _, _ := get(t, s, "/owa/healthcheck.htm"); code != 200 {
		t.Errorf("health page = %d", code)
	}
}

func TestBasicLogin(t *testing.T) {
	s := loginServer(t)
	for _, tc := range []struct {
		user, password string
		code           int
	}{{"alice", "demo", 200}, {"Bob", "demo", 200}, {"alice", "wrong", 401}, {"mallory", "demo", 401}} {
		req, _ := http.NewRequest("GET", s.URL+"/mapi/emsmdb/", nil)
		req.SetBasicAuth(tc.user, tc.password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("Basic %s/%s = %d, want %d", tc.user, tc.password, resp.StatusCode, tc.code)
		}
	}
}

// curlNTLM runs curl --ntlm against url and returns its output.
func curlNTLM(t *testing.T, user, url string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is missing: install the Debian package curl")
	}
	out, err := exec.Command("curl", "-sS", "--max-time", "10", "--ntlm", "-u", user, url).CombinedOutput()
	return string(out), err
}

func TestNTLMWithCurl(t *testing.T) {
	s := loginServer(t)
	// curl sends NEGOTIATE, reads the CHALLENGE and sends AUTHENTICATE on
	// the same connection, with an NTLMv2 response the server checks.
	out, err := curlNTLM(t, `EXAMPLE\alice:demo`, s.URL+"/EWS/Exchange.asmx")
	if err != nil || out != "cas-a served /EWS/Exchange.asmx for alice\n" {
		t.Errorf("curl --ntlm alice = %q, %v", out, err)
	}
	if out, _ := curlNTLM(t, "alice:nope", s.URL+"/EWS/Exchange.asmx"); !strings.Contains(out, "wrong password") {
		t.Errorf("curl --ntlm with a wrong password = %q", out)
	}
}

func TestNTLMChallengeBoundToConnection(t *testing.T) {
	s := loginServer(t)
	// A CHALLENGE issued on one connection does not hold on another: an
	// AUTHENTICATE that arrives elsewhere is refused, whatever it holds.
	c1 := rawConn(t, s.Addr)
	fmt.Fprintf(c1, "GET /ews/ HTTP/1.1\r\nHost: x\r\nAuthorization: NTLM %s\r\n\r\n", b64(negotiateMessage()))
	resp, err := http.ReadResponse(bufio.NewReader(c1), nil)
	if err != nil || resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "NTLM ") {
		t.Fatalf("NEGOTIATE: %v %v", resp, err)
	}
	c2 := rawConn(t, s.Addr)
	fmt.Fprintf(c2, "GET /ews/ HTTP/1.1\r\nHost: x\r\nAuthorization: NTLM %s\r\n\r\n", b64(authenticateStub()))
	resp, err = http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 401 || !strings.Contains(string(body), "without a CHALLENGE on this connection") {
		t.Errorf("AUTHENTICATE on another connection = %d %q", resp.StatusCode, body)
	}
}

func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return c
}

func negotiateMessage() []byte {
	m := append([]byte(nil), ntlmSignature...)
	m = binary.LittleEndian.AppendUint32(m, 1)
	return binary.LittleEndian.AppendUint32(m, flagUnicode|flagNTLM|flagRequestTarget)
}

// authenticateStub is an AUTHENTICATE message with empty fields.
func authenticateStub() []byte {
	m := make([]byte, 64)
	copy(m, ntlmSignature)
	binary.LittleEndian.PutUint32(m[8:], 3)
	return m
}

func TestNTLMClientHandshake(t *testing.T) {
	s := loginServer(t)
	c := rawConn(t, s.Addr)
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET /rpc/x HTTP/1.1\r\nHost: x\r\nAuthorization: NTLM %s\r\n\r\n", NTLMNegotiate())
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("NEGOTIATE: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	auth, err := NTLMAuthenticate(strings.TrimPrefix(resp.Header.Get("WWW-Authenticate"), "NTLM "), `EXAMPLE\bob`, "demo")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /mapi/x HTTP/1.1\r\nHost: x\r\nAuthorization: NTLM %s\r\n\r\n", auth)
	expectUser(t, br, "bob")
	// The login covers the connection: no credentials on the next request.
	fmt.Fprintf(c, "GET /ews/y HTTP/1.1\r\nHost: x\r\n\r\n")
	expectUser(t, br, "bob")
	// A new connection starts unauthenticated.
	c2 := rawConn(t, s.Addr)
	fmt.Fprintf(c2, "GET /ews/y HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c2), nil); err != nil || resp.StatusCode != 401 {
		t.Errorf("fresh connection: %v %v, want 401", resp, err)
	}
}

func expectUser(t *testing.T, br *bufio.Reader, user string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("X-User") != user {
		t.Errorf("response %d, X-User %q, body %q; want 200 for %s", resp.StatusCode, resp.Header.Get("X-User"), body, user)
	}
}

func TestPingHeldForItsHeartbeat(t *testing.T) {
	s := NewUnstartedServer("cas-a")
	s.PingHold = time.Hour
	s.Start()
	t.Cleanup(s.Close)
	start := time.Now()
	// The body's HeartbeatInterval wins over PingHold.
	resp, err := http.Post(s.URL+"/Microsoft-Server-ActiveSync?Cmd=Ping&User=a&DeviceId=d&DeviceType=t", "text/xml",
		strings.NewReader("<Ping><HeartbeatInterval>1</HeartbeatInterval></Ping>"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if d := time.Since(start); d < time.Second || d > 5*time.Second || !strings.Contains(string(body), "<Status>1</Status>") {
		t.Errorf("Ping answered after %v with %q, want Status 1 after about 1s", d, body)
	}
}

func TestRPCEchoAndChannels(t *testing.T) {
	s := NewServer("cas-a")
	t.Cleanup(s.Close)
	c := rawConn(t, s.Addr)
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "RPC_IN_DATA /rpc/rpcproxy.dll?x:6001 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	echo, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || len(echo) != 20 || echo[2] != 20 || binary.LittleEndian.Uint16(echo[16:]) != 0x40 {
		t.Errorf("echo: %d % x", resp.StatusCode, echo)
	}
	// CONN/A1 on an OUT channel: the cookie is recorded and CONN/A3 and
	// CONN/C2 follow the 200.
	a1 := rtsPDU(0, rtsCommand(6, 1), append(binary.LittleEndian.AppendUint32(nil, 3), bytes.Repeat([]byte{7}, 16)...),
		append(binary.LittleEndian.AppendUint32(nil, 3), make([]byte, 16)...), rtsCommand(0, 65536))
	fmt.Fprintf(c, "RPC_OUT_DATA /rpc/rpcproxy.dll?x:6001 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(a1), a1)
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != outChannelLength {
		t.Fatalf("OUT channel: %v %v", resp, err)
	}
	pdus := make([]byte, 72)
	if _, err := io.ReadFull(resp.Body, pdus); err != nil || binary.LittleEndian.Uint16(pdus[8:]) != 28 {
		t.Errorf("CONN/A3 and CONN/C2: % x, %v", pdus, err)
	}
	if ch := s.Channels(); len(ch) != 1 || ch[0].PDU != "CONN/A1" || ch[0].Cookie[0] != 7 || ch[0].In {
		t.Errorf("Channels() = %+v", ch)
	}
}

func TestFormsLoginOnlyOnItsServer(t *testing.T) {
	var servers []*Server
	for _, name := range []string{"cas-a", "cas-b"} {
		s := NewUnstartedServer(name)
		s.FormsAuth = true
		s.Start()
		t.Cleanup(s.Close)
		servers = append(servers, s)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.PostForm(servers[0].URL+"/owa/auth.owa", map[string][]string{"username": {"alice"}, "password": {"demo"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookie := resp.Header.Get("Set-Cookie")
	if resp.StatusCode != 302 || !strings.HasPrefix(cookie, "cadata=alice.") {
		t.Fatalf("login: %d, Set-Cookie %q", resp.StatusCode, cookie)
	}
	for i, s := range servers {
		req, _ := http.NewRequest("GET", s.URL+"/owa/", nil)
		req.Header.Set("Cookie", strings.Split(cookie, ";")[0])
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// The session cookie of cas-a means nothing to cas-b.
		if signedIn := strings.Contains(string(body), `id="user">alice<`); signedIn != (i == 0) {
			t.Errorf("%s with cas-a's cookie: %d, signed in %v", s.Name, resp.StatusCode, signedIn)
		}
	}
}
