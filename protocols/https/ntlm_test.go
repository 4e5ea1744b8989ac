package https

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// exchangeFarm starts n Exchange-like back-ends that ask EWS, RPC and MAPI
// for connection-bound NTLM logins, and returns them with a round-robin
// pool over them.
func exchangeFarm(t testing.TB, n int) ([]*exchangetest.Server, *proxy.Pool) {
	t.Helper()
	var servers []*exchangetest.Server
	var addrs []string
	for i := range n {
		s := exchangetest.NewUnstartedServer(fmt.Sprintf("cas-%c", 'a'+i))
		s.Users = exchangetest.DemoUsers()
		s.Start()
		t.Cleanup(s.Close)
		servers = append(servers, s)
		addrs = append(addrs, s.Name+"="+s.Addr)
	}
	return servers, newPool("exchange", addrs...)
}

// ntlmLogin runs the NTLM handshake on c for path and returns the status
// and X-User of the final response.
func ntlmLogin(t testing.TB, c net.Conn, br *bufio.Reader, path, user string) (int, string) {
	t.Helper()
	send(t, c, "GET "+path+" HTTP/1.1\r\nHost: mail.example.com\r\nAuthorization: NTLM "+exchangetest.NTLMNegotiate()+"\r\n\r\n")
	resp, _ := response(t, br, "GET")
	challenge, ok := strings.CutPrefix(resp.Header.Get("WWW-Authenticate"), "NTLM ")
	if resp.StatusCode != 401 || !ok {
		return resp.StatusCode, ""
	}
	auth, err := exchangetest.NTLMAuthenticate(challenge, `EXAMPLE\`+user, "demo")
	if err != nil {
		t.Fatal(err)
	}
	send(t, c, "GET "+path+" HTTP/1.1\r\nHost: mail.example.com\r\nAuthorization: NTLM "+auth+"\r\n\r\n")
	resp, _ = response(t, br, "GET")
	return resp.StatusCode, resp.Header.Get("X-User")
}

// loginAndUse logs user in on a new connection, then sends requests with
// no credentials to other services over the same client connection, and
// returns how many of the login and the requests were answered for user.
func loginAndUse(t testing.TB, addr, user string, follow int) (ok int) {
	c, br := dial(t, addr)
	defer c.Close()
	if code, who := ntlmLogin(t, c, br, "/EWS/Exchange.asmx", user); code == 200 && who == user {
		ok++
	}
	for i := range follow {
		path := []string{"/mapi/emsmdb/", "/rpc/rpcproxy.dll", "/ews/x"}[i%3]
		resp, _ := get(t, c, br, path)
		if resp.StatusCode == 200 && resp.Header.Get("X-User") == user {
			ok++
		}
	}
	return ok
}

// concurrentLogins runs n clients at once, alternating alice and bob, and
// returns how many logins and follow-up requests went right.
func concurrentLogins(t *testing.T, addr string, n, follow int) (ok, total int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := loginAndUse(t, addr, []string{"alice", "bob"}[i%2], follow)
			mu.Lock()
			ok += got
			mu.Unlock()
		}()
	}
	wg.Wait()
	return ok, n * (1 + follow)
}

func TestNTLMPinsClientToItsBackendConnection(t *testing.T) {
	_, pool := exchangeFarm(t, 2)
	f := &Frontend{Pool: pool}
	addr := serve(t, f)
	before := testutil.ToFloat64(pinnedTotal.WithLabelValues("exchange"))
	// 50 clients log in at once over two back-ends balanced round-robin:
	// each login's CHALLENGE and AUTHENTICATE must meet on one back-end
	// connection, and the later requests without credentials ride it.
	ok, total := concurrentLogins(t, addr, 50, 3)
	if ok != total {
		t.Errorf("%d of %d logins and follow-up requests answered for their user", ok, total)
	}
	if n := testutil.ToFloat64(pinnedTotal.WithLabelValues("exchange")) - before; n != 50 {
		t.Errorf("pinned %v client connections, want 50", n)
	}
}

func TestNTLMFailsWithoutPinning(t *testing.T) {
	_, pool := exchangeFarm(t, 2)
	// The same clients through a proxy that balances each request on its
	// own, as a generic reverse proxy does: logins break. This is the
	// check that the test above can fail.
	addr := roundRobinProxy(t, pool, false)
	ok, total := concurrentLogins(t, addr, 50, 3)
	if ok == total {
		t.Errorf("all %d requests succeeded without pinning; the pinning test proves nothing", total)
	}
	t.Logf("without pinning %d of %d went right", ok, total)
}

func TestPinnedConnectionNeverServesAnotherClient(t *testing.T) {
	_, pool := exchangeFarm(t, 1)
	addr := serve(t, &Frontend{Pool: pool})
	// alice and bob log in on two client connections, then alternate
	// requests without credentials: each must be answered as its own user
	// (haproxy issues 581 and 2985 shipped the opposite).
	ca, bra := dial(t, addr)
	cb, brb := dial(t, addr)
	if code, who := ntlmLogin(t, ca, bra, "/ews/", "alice"); code != 200 || who != "alice" {
		t.Fatalf("alice's login: %d %q", code, who)
	}
	if code, who := ntlmLogin(t, cb, brb, "/ews/", "bob"); code != 200 || who != "bob" {
		t.Fatalf("bob's login: %d %q", code, who)
	}
	for i := range 10 {
		ra, _ := get(t, ca, bra, fmt.Sprintf("/mapi/%d", i))
		rb, _ := get(t, cb, brb, fmt.Sprintf("/mapi/%d", i))
		if ra.Header.Get("X-User") != "alice" || rb.Header.Get("X-User") != "bob" {
			t.Fatalf("round %d: alice's connection answered for %q, bob's for %q",
				i, ra.Header.Get("X-User"), rb.Header.Get("X-User"))
		}
	}
	// A third client with no login is asked to log in, never served as
	// either of them.
	cc, brc := dial(t, addr)
	if resp, _ := get(t, cc, brc, "/mapi/x"); resp.StatusCode != 401 {
		t.Errorf("anonymous client got %d (X-User %q), want 401", resp.StatusCode, resp.Header.Get("X-User"))
	}
}

func TestPinnedBackendCloseEndsClientConnection(t *testing.T) {
	servers, pool := exchangeFarm(t, 1)
	addr := serve(t, &Frontend{Pool: pool})
	c, br := dial(t, addr)
	if code, who := ntlmLogin(t, c, br, "/ews/", "alice"); code != 200 || who != "alice" {
		t.Fatalf("login: %d %q", code, who)
	}
	servers[0].Close()
	// The login lived on the back-end connection; with it gone, the client
	// connection closes instead of sending alice's next request elsewhere
	// without her login.
	send(t, c, "GET /ews/ HTTP/1.1\r\nHost: m\r\n\r\n")
	if line, err := br.ReadString('\n'); err == nil {
		t.Errorf("read %q after the pinned back-end closed; want the connection closed", line)
	}
}

func TestNTLMPinnedOverTLSBackend(t *testing.T) {
	s := exchangetest.NewUnstartedServer("cas-a")
	s.Users = exchangetest.DemoUsers()
	s.StartTLS()
	t.Cleanup(s.Close)
	addr := serve(t, &Frontend{Pool: newPool("tls", "cas-a="+s.Addr), Link: proxy.Link{BackendTLSMode: proxy.TLSImplicit, BackendTLS: trusting(s)}})
	// Exchange is reached over TLS (its session tickets arrive on the
	// connection): the pinned connection stays in use for the login's
	// later requests.
	if ok := loginAndUse(t, addr, "alice", 5); ok != 6 {
		t.Errorf("%d of 6 requests answered for alice over a TLS back-end", ok)
	}
	if n := s.Connections(); n != 1 {
		t.Errorf("the back-end saw %d connections, want the one pinned", n)
	}
}
