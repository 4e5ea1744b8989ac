package https

import (
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// 1,000 Pings held at once: the default run holds each 20 s, long enough
// that on a busy machine (the race detector, other packages' tests) all
// of them are dialed and held before the first is answered. Run with
// -args -https.ping-hold=60s for a longer soak.
var (
	pingCount = flag.Int("https.pings", 1000, "ActiveSync Pings held at once by TestActiveSyncPingsHeld")
	pingHold  = flag.Duration("https.ping-hold", 20*time.Second, "how long the back-ends hold each Ping in TestActiveSyncPingsHeld")
)

// pingServers starts Exchange-like back-ends holding Pings for the given
// times.
func pingServers(t testing.TB, holds ...time.Duration) ([]*exchangetest.Server, []string) {
	t.Helper()
	var servers []*exchangetest.Server
	var specs []string
	for i, hold := range holds {
		s := exchangetest.NewUnstartedServer(fmt.Sprintf("cas-%c", 'a'+i))
		s.PingHold = hold
		s.Start()
		t.Cleanup(s.Close)
		servers = append(servers, s)
		specs = append(specs, s.Name+"="+s.Addr)
	}
	return servers, specs
}

const pingRequest = "POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=%s&DeviceType=iPhone HTTP/1.1\r\n" +
	"Host: mail.example.com\r\nMS-ASProtocolVersion: 14.1\r\nContent-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: 6\r\n\r\n<Ping>"

func heldPings(servers []*exchangetest.Server) int {
	n := 0
	for _, s := range servers {
		n += s.HeldPings()
	}
	return n
}

func TestActiveSyncPingsHeld(t *testing.T) {
	n, hold := *pingCount, *pingHold
	servers, specs := pingServers(t, hold, hold)
	addr := serve(t, &Frontend{Pool: newPool("eas", specs...)})
	start := time.Now()
	var answered, wrong atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		c, br := dial(t, addr)
		c.SetDeadline(time.Now().Add(hold + 30*time.Second))
		fmt.Fprintf(c, pingRequest, fmt.Sprintf("dev%04d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			resp, _ := response(t, br, "POST")
			if resp.StatusCode == 200 && time.Since(start) >= hold-time.Second {
				answered.Add(1)
			} else {
				wrong.Add(1)
			}
		}()
	}
	// Every Ping is held by a back-end at once, and counted as a long poll.
	eventually(t, hold-2*time.Second, fmt.Sprintf("%d Pings held", n), func() bool { return heldPings(servers) == n })
	if g := testutil.ToFloat64(longPolls.WithLabelValues("eas", ActiveSync)); int(g) != n {
		t.Errorf("long polls gauge = %v while %d Pings are held", g, n)
	}
	wg.Wait()
	if answered.Load() != int32(n) {
		t.Errorf("%d of %d Pings answered 200 after the heartbeat (%d early or failed)", answered.Load(), n, wrong.Load())
	}
	eventually(t, wait, "the long polls gauge back to 0", func() bool {
		return testutil.ToFloat64(longPolls.WithLabelValues("eas", ActiveSync)) == 0
	})
}

func TestActiveSyncBackendDiesDuringPings(t *testing.T) {
	const n = 100
	// cas-a holds Pings for a minute but dies after a moment; cas-b
	// answers after two seconds.
	servers, specs := pingServers(t, time.Minute, 2*time.Second)
	addr := serve(t, &Frontend{Pool: newPool("eas", specs...)})
	type result struct{ first, final int }
	results := make(chan result, n)
	for i := range n {
		c, br := dial(t, addr)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		device := fmt.Sprintf("dev%04d", i)
		fmt.Fprintf(c, pingRequest, device)
		go func() {
			resp, _ := response(t, br, "POST")
			r := result{first: resp.StatusCode, final: resp.StatusCode}
			if resp.StatusCode == 502 {
				// The device retries its Ping, as ActiveSync clients do
				// after a 5xx: on the same connection unless told to close.
				if resp.Close {
					c.Close()
					c, br = dial(t, addr)
					c.SetDeadline(time.Now().Add(30 * time.Second))
				}
				fmt.Fprintf(c, pingRequest, device)
				resp, _ = response(t, br, "POST")
				if resp.Header.Get("X-Backend") == "cas-b" {
					r.final = resp.StatusCode
				} else {
					r.final = -resp.StatusCode
				}
			}
			c.Close()
			results <- r
		}()
	}
	eventually(t, wait, "all Pings held", func() bool { return heldPings(servers) == n })
	onA := servers[0].HeldPings()
	servers[0].Close()
	var failed, ok int
	for range n {
		r := <-results
		if r.first == 502 {
			failed++
		}
		if r.final == 200 {
			ok++
		}
	}
	if failed != onA || onA == 0 {
		t.Errorf("%d Pings got 502 when cas-a died holding %d", failed, onA)
	}
	if ok != n {
		t.Errorf("%d of %d Pings finally answered 200 by the live back-end", ok, n)
	}
}
