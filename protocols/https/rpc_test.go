package https

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"

	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRTSLayouts(t *testing.T) {
	vc := [16]byte{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f}
	for _, tc := range []struct {
		pdu  []byte
		in   bool
		size int
		name string
	}{{exchangetest.ConnA1(vc), false, 76, "CONN/A1"}, {exchangetest.ConnB1(vc), true, 104, "CONN/B1"}, {exchangetest.InR1A1(vc), true, 88, "IN_R1/A1"}} {
		if len(tc.pdu) != tc.size {
			t.Errorf("%s is %d bytes, want %d", tc.name, len(tc.pdu), tc.size)
		}
		method := map[bool]string{true: "RPC_IN_DATA", false: "RPC_OUT_DATA"}[tc.in]
		got, ok := peekRTS(bufio.NewReader(bytes.NewReader(tc.pdu)), []byte(method), 1<<30)
		if !ok || got.name != tc.name || got.cookie != vc {
			t.Errorf("%s parsed as %+v, %v", tc.name, got, ok)
		}
	}
	// The hex example of the research notes, byte for byte.
	want := "05001403100000004c00000000000000000004000600000001000000030000001011121314151617" +
		"18191a1b1c1d1e1f03000000aa000000000000000000000000000000000000000000040000"
	if got := fmt.Sprintf("%x", exchangetest.ConnA1(vc)); !strings.HasPrefix(got, want[:80]) {
		t.Errorf("CONN/A1 = %s, want prefix %s", got, want[:80])
	}
	// A body too short to hold a PDU is never waited for.
	if _, ok := peekRTS(bufio.NewReader(strings.NewReader("abcd")), []byte("RPC_IN_DATA"), 4); ok {
		t.Error("a 4-byte body parsed as a PDU")
	}
}

// rpcFrontend serves a farm of n back-ends asking Basic or NTLM logins
// with RPC channel affinity.
func rpcFrontend(t *testing.T, n int) ([]*exchangetest.Server, *proxy.Pool, string) {
	t.Helper()
	servers, pool := exchangeFarm(t, n)
	f := &Frontend{Pool: pool, Config: Config{Services: map[string]Service{RPC: {Affinity: AffinityRPCChannel}}}}
	return servers, pool, serve(t, f)
}

var basicAlice = "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice:demo")) + "\r\n"

// openOut opens an OUT channel from src with Basic auth and returns the
// connection once the 200 and the first PDUs arrived.
func openOut(t testing.TB, src, addr string, vc [16]byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, br := dialFrom(t, src, addr)
	send(t, c, "RPC_OUT_DATA /rpc/rpcproxy.dll?mbx@example.com:6001 HTTP/1.1\r\nHost: mail.example.com\r\n"+basicAlice+
		"Content-Length: 76\r\nUser-Agent: MSRPC\r\nCache-Control: no-cache\r\nConnection: Keep-Alive\r\n\r\n"+string(exchangetest.ConnA1(vc)))
	head := rawHead(t, br)
	if head[0] != "HTTP/1.1 200 OK" || !hasLine(head, "Content-Length: 1073741824") {
		t.Fatalf("OUT channel answered %q", head)
	}
	pdus := make([]byte, 72) // CONN/A3 and CONN/C2
	if _, err := io.ReadFull(br, pdus); err != nil {
		t.Fatalf("reading CONN/A3 and CONN/C2: %v", err)
	}
	return c, br
}

// openIn opens an IN channel from src with Basic auth, sending first.
func openIn(t testing.TB, src, addr string, first []byte) net.Conn {
	t.Helper()
	c, _ := dialFrom(t, src, addr)
	send(t, c, "RPC_IN_DATA /rpc/rpcproxy.dll?mbx@example.com:6001 HTTP/1.1\r\nHost: mail.example.com\r\n"+basicAlice+
		"Content-Length: 1073741824\r\nUser-Agent: MSRPC\r\nCache-Control: no-cache\r\nConnection: Keep-Alive\r\n\r\n"+string(first))
	return c
}

// channelsOf returns, per cookie, the back-ends each channel kind
// reached.
func channelsOf(servers []*exchangetest.Server) map[[16]byte]map[bool][]string {
	out := map[[16]byte]map[bool][]string{}
	for _, s := range servers {
		for _, ch := range s.Channels() {
			if out[ch.Cookie] == nil {
				out[ch.Cookie] = map[bool][]string{}
			}
			out[ch.Cookie][ch.In] = append(out[ch.Cookie][ch.In], s.Name)
		}
	}
	return out
}

func TestRPCChannelsMeetByCookie(t *testing.T) {
	servers, _, addr := rpcFrontend(t, 3)
	together := testutil.ToFloat64(rpcPairs.WithLabelValues("exchange", "together"))
	// 100 virtual connections with Basic auth, their OUT channels from
	// 127.0.0.3 and IN channels from 127.0.0.2: only the cookie in the
	// first PDU ties them.
	for i := range 100 {
		vc := [16]byte{byte(i), 0x5A, byte(i * 7)}
		out, _ := openOut(t, "127.0.0.3", addr, vc)
		in := openIn(t, "127.0.0.2", addr, exchangetest.ConnB1(vc))
		eventually(t, wait, "both channels on the back-ends", func() bool { return len(channelsOf(servers)[vc][true]) == 1 })
		in.Close()
		out.Close()
	}
	used := map[string]int{}
	for vc, kinds := range channelsOf(servers) {
		if len(kinds[true]) != 1 || len(kinds[false]) != 1 || kinds[true][0] != kinds[false][0] {
			t.Errorf("cookie %x: IN on %v, OUT on %v", vc[:3], kinds[true], kinds[false])
		}
		used[kinds[true][0]]++
	}
	if len(used) != 3 {
		t.Errorf("virtual connections spread over %v, want all 3 back-ends", used)
	}
	if n := testutil.ToFloat64(rpcPairs.WithLabelValues("exchange", "together")) - together; n != 100 {
		t.Errorf("pairs counted together: %v, want 100", n)
	}
}

func TestRPCReplacementChannelFollowsItsVirtualConnection(t *testing.T) {
	servers, pool, addr := rpcFrontend(t, 2)
	vc := [16]byte{0x42, 0x42}
	// The back-end the cookie hashes to is drained when the pair opens, so
	// the pair lands on the other one; the replacement IN channel must
	// follow its virtual connection there, not the hash.
	first := (&proxy.Rendezvous{}).Order(rts{cookie: vc}.key(), pool.Backends)[0]
	first.SetAdmin(proxy.Draining)
	out, _ := openOut(t, "127.0.0.3", addr, vc)
	in := openIn(t, "127.0.0.2", addr, exchangetest.ConnB1(vc))
	eventually(t, wait, "the pair", func() bool { return len(channelsOf(servers)[vc][true]) == 1 })
	first.SetAdmin(proxy.Enabled)
	in.Close()
	in2 := openIn(t, "127.0.0.4", addr, exchangetest.InR1A1(vc))
	defer in2.Close()
	eventually(t, wait, "the replacement", func() bool { return len(channelsOf(servers)[vc][true]) == 2 })
	got := channelsOf(servers)[vc]
	if got[true][1] == first.Name || got[true][1] != got[false][0] {
		t.Errorf("replacement IN on %s, OUT on %s (hash prefers %s)", got[true][1], got[false][0], first.Name)
	}
	out.Close()
}

func TestRPCChannelsWithNTLMFromOneClient(t *testing.T) {
	servers, _, addr := rpcFrontend(t, 3)
	together := testutil.ToFloat64(rpcPairs.WithLabelValues("exchange", "together"))
	split := testutil.ToFloat64(rpcPairs.WithLabelValues("exchange", "split"))
	// With NTLM the back-end is fixed at the empty first leg, before any
	// cookie is seen: both channels of one client address go to the same
	// back-end, and the pair counter confirms it from the cookies.
	for i := range 10 {
		src := fmt.Sprintf("127.0.0.%d", 10+i)
		vc := [16]byte{0x77, byte(i)}
		out := ntlmChannel(t, src, addr, "RPC_OUT_DATA", 76, exchangetest.ConnA1(vc))
		in := ntlmChannel(t, src, addr, "RPC_IN_DATA", 1<<30, exchangetest.ConnB1(vc))
		eventually(t, wait, "both channels", func() bool {
			ch := channelsOf(servers)[vc]
			return len(ch[true]) == 1 && len(ch[false]) == 1 // the OUT channel may be recorded last on a busy machine
		})
		got := channelsOf(servers)[vc]
		if len(got[false]) != 1 || got[true][0] != got[false][0] {
			t.Errorf("from %s: IN on %v, OUT on %v", src, got[true], got[false])
		}
		in.Close()
		out.Close()
	}
	if n := testutil.ToFloat64(rpcPairs.WithLabelValues("exchange", "together")) - together; n != 10 {
		t.Errorf("pairs counted together: %v, want 10", n)
	}
	if n := testutil.ToFloat64(rpcPairs.WithLabelValues("exchange", "split")) - split; n != 0 {
		t.Errorf("pairs counted split: %v, want 0", n)
	}
}

// ntlmChannel opens a channel as Outlook does with NTLM: an empty
// NEGOTIATE leg, then on the same connection the AUTHENTICATE leg with
// the real Content-Length and the first PDU.
func ntlmChannel(t *testing.T, src, addr, method string, length int, pdu []byte) net.Conn {
	t.Helper()
	c, br := dialFrom(t, src, addr)
	target := method + " /rpc/rpcproxy.dll?mbx@example.com:6001 HTTP/1.1\r\nHost: mail.example.com\r\n"
	send(t, c, target+"Authorization: NTLM "+exchangetest.NTLMNegotiate()+"\r\nContent-Length: 0\r\n\r\n")
	resp, _ := response(t, br, method)
	challenge, _ := strings.CutPrefix(resp.Header.Get("WWW-Authenticate"), "NTLM ")
	auth, err := exchangetest.NTLMAuthenticate(challenge, `EXAMPLE\alice`, "demo")
	if err != nil {
		t.Fatalf("%s first leg: %d %v", method, resp.StatusCode, err)
	}
	send(t, c, fmt.Sprintf("%sAuthorization: NTLM %s\r\nContent-Length: %d\r\n\r\n%s", target, auth, length, pdu))
	return c
}

func TestRPCEchoRequestsDoNotHang(t *testing.T) {
	_, _, addr := rpcFrontend(t, 2)
	// [MS-RPCH] 2.1.2.1.5: echo requests carry 0 to 16 bytes; a real client
	// sent 4 (mod_proxy_msrpc issue 26). Gatehouse must not wait for a PDU.
	for _, body := range []string{"", "\x01\x02\x03\x04", strings.Repeat("e", 16)} {
		for _, method := range []string{"RPC_IN_DATA", "RPC_OUT_DATA"} {
			c, br := dial(t, addr)
			c.SetDeadline(time.Now().Add(3 * time.Second))
			send(t, c, fmt.Sprintf("%s /rpc/rpcproxy.dll?mbx@example.com:6001 HTTP/1.1\r\nHost: m\r\n%sContent-Length: %d\r\n\r\n%s",
				method, basicAlice, len(body), body))
			resp, echo := response(t, br, method)
			if resp.StatusCode != 200 || len(echo) != 20 || resp.Header.Get("Content-Type") != "application/rpc" {
				t.Errorf("%s echo of %d bytes: %d with %d bytes", method, len(body), resp.StatusCode, len(echo))
			}
		}
	}
}

func TestRPCStreamsBothWaysUnbuffered(t *testing.T) {
	_, _, addr := rpcFrontend(t, 2)
	vc := [16]byte{0x99}
	out, outBr := openOut(t, "127.0.0.1", addr, vc)
	in := openIn(t, "127.0.0.1", addr, exchangetest.ConnB1(vc))
	// For two seconds the client writes a small PDU-sized piece on the IN
	// channel every 50 ms; the back-end returns it on the OUT channel. Each
	// piece must come back before the next is written: nothing sits in a
	// buffer waiting for more.
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		piece := fmt.Sprintf("%04d:%s", i, strings.Repeat("x", 100))
		in.SetWriteDeadline(time.Now().Add(time.Second))
		send(t, in, piece)
		out.SetReadDeadline(time.Now().Add(time.Second))
		got := make([]byte, len(piece))
		if _, err := io.ReadFull(outBr, got); err != nil || string(got) != piece {
			t.Fatalf("piece %d: read %q, %v", i, got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	in.Close()
	out.Close()
}

// rpcPairsHold runs n virtual connections at once, to see no pair waits
// for another.
func TestRPCChannelsDoNotWaitForEachOther(t *testing.T) {
	_, _, addr := rpcFrontend(t, 2)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vc := [16]byte{0x31, byte(i)}
			// IN first this time: the OUT channel must not be needed for the
			// IN channel's request to be forwarded.
			in := openIn(t, "127.0.0.2", addr, exchangetest.ConnB1(vc))
			defer in.Close()
			out, outBr := openOut(t, "127.0.0.3", addr, vc)
			defer out.Close()
			send(t, in, "ping")
			got := make([]byte, 4)
			if _, err := io.ReadFull(outBr, got); err != nil || string(got) != "ping" {
				t.Errorf("vc %d: %q %v", i, got, err)
			}
		}()
	}
	wg.Wait()
}
