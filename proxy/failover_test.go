//go:build linux

package proxy

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// loadRun is many clients holding sessions through the proxy while a
// back-end dies under them. Each client opens a session, reads the
// back-end's banner, echoes a line every 50ms for a while, leaves, and
// opens the next one, until the run ends for it: once end has passed and
// it has begun a session after the kill, or at hardEnd. The phases are
// set by what happened, not by the clock, so a slow machine stretches
// them instead of failing the test.
type loadRun struct {
	addr    string
	end     atomic.Int64 // unix nanoseconds; 0 until the kill sets it
	hardEnd time.Time
	killed  atomic.Bool // set once the dead back-end's listener and conns are closed

	mu       sync.Mutex
	sessions map[string]int // "before a", "after b", "broken a", ...
	failures []string
}

func (r *loadRun) count(what string) {
	r.mu.Lock()
	r.sessions[what]++
	r.mu.Unlock()
}

func (r *loadRun) fail(format string, args ...any) {
	r.mu.Lock()
	if len(r.failures) < 20 {
		r.failures = append(r.failures, fmt.Sprintf(format, args...))
	}
	r.mu.Unlock()
}

// client runs one client's sessions one after another.
func (r *loadRun) client(id int) {
	mustWork := false // the previous session died with its back-end
	beganAfter := false
	for n := 0; !r.over(beganAfter); n++ {
		mustWork = mustWork || r.killed.Load()
		c, err := dialFrom("127.0.0.1", r.addr)
		if err != nil {
			r.fail("client %d session %d: connecting to the proxy: %v", id, n, err)
			return
		}
		broken := r.session(c, fmt.Sprintf("c%d s%d", id, n), mustWork)
		c.conn.Close()
		beganAfter = beganAfter || mustWork
		mustWork = mustWork || broken
	}
}

// over reports whether a client is done.
func (r *loadRun) over(beganAfter bool) bool {
	now := time.Now()
	end := r.end.Load()
	return now.After(r.hardEnd) || (end != 0 && beganAfter && now.UnixNano() > end)
}

// counts returns a copy of the session counts.
func (r *loadRun) counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.sessions)
}

// live returns the echo server's open connections.
func (e *echoServer) live() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.conns)
}

// session runs one session and reports whether it broke under the client.
// A session begun after the kill must reach the survivor and work
// throughout; one begun before may lose the dead back-end, never the
// survivor.
func (r *loadRun) session(c *client, id string, mustWork bool) (broken bool) {
	when := "before"
	if mustWork {
		when = "after"
	}
	name, err := c.readLine()
	if err == nil {
		err = c.echo(id + " hello")
	}
	switch {
	case err != nil && mustWork:
		r.fail("%s, begun after the kill: %v", id, err)
		return true
	case err != nil:
		r.count("lost at start")
		return true
	case mustWork && name != "b":
		r.fail("%s, begun after the kill, reached %q", id, name)
	}
	r.count(when + " " + name)
	hold := time.Now().Add(100*time.Millisecond + rand.N(300*time.Millisecond))
	for i := 0; time.Now().Before(hold); i++ {
		time.Sleep(50 * time.Millisecond)
		if err := c.echo(fmt.Sprintf("%s line %d", id, i)); err != nil {
			if name != "a" {
				r.fail("%s on survivor %s broke: %v", id, name, err)
			}
			r.count("broken " + name)
			return true
		}
	}
	return false
}

// Two back-ends share 200 busy clients; one dies (listener and live
// connections gone at once). Every connection to the proxy succeeds, every
// session begun after the death reaches the survivor and works, the dead
// one's clients reconnect onto the survivor, and no survivor session is
// disturbed. No health monitor runs: failed dials alone take the dead
// back-end out. When it comes back and health says so, it gets sessions
// again.
func TestFailoverUnderLoad(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	ba, bb := NewBackend("a", a.Addr(), 1), NewBackend("b", b.Addr(), 1)
	// The dead back-end refuses at once; the connect timeout only bounds
	// dials to the survivor, which a loaded machine (200 clients, the race
	// detector, other tests) can leave unscheduled for over a second.
	pool := &Pool{Name: "failover", Backends: []*Backend{ba, bb}, ConnectTimeout: wait}
	addr := startProxy(t, tcpProxy("failover", pool))
	failoversBefore := testutil.ToFloat64(failovers.WithLabelValues("failover", "b"))

	const clients, runAfter = 200, 1300 * time.Millisecond
	r := &loadRun{addr: addr, hardEnd: time.Now().Add(60 * time.Second), sessions: map[string]int{}}
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.client(i)
		}()
	}
	// The kill comes once both back-ends have served sessions and the
	// doomed one holds live ones, however long a busy machine takes.
	eventually(30*time.Second, func() bool {
		c := r.counts()
		return c["before a"] >= 20 && c["before b"] >= 20 && a.live() >= 10
	})
	a.kill()
	r.killed.Store(true)
	r.end.Store(time.Now().Add(runAfter).UnixNano())
	wg.Wait()

	for _, f := range r.failures {
		t.Error(f)
	}
	t.Logf("sessions: %v", r.sessions)
	if r.sessions["before a"] == 0 || r.sessions["before b"] == 0 {
		t.Errorf("before the kill sessions were not spread over both back-ends: %v", r.sessions)
	}
	if r.sessions["broken a"] == 0 {
		t.Errorf("the kill hit no live session, so it proved nothing: %v", r.sessions)
	}
	if r.sessions["after b"] < clients {
		t.Errorf("only %d sessions begun after the kill reached b, want every client to begin one", r.sessions["after b"])
	}
	if ba.Healthy() {
		t.Error("the dead back-end is still considered healthy after failed dials")
	}
	if testutil.ToFloat64(failovers.WithLabelValues("failover", "b")) == failoversBefore {
		t.Error("no failover counted")
	}

	restartEcho(t, a)
	ba.SetHealthy(true)
	seen := map[string]int{}
	for range 6 {
		seen[connect(t, addr).banner(t)]++
	}
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Errorf("after the dead back-end came back, sessions went to %v, want both", seen)
	}
}

// With source-IP affinity every connection of one client address reaches
// the same back-end of three, the one Pick names for that address, while
// other addresses spread over the pool.
func TestSourceIPAffinityThroughServer(t *testing.T) {
	pool := &Pool{Name: "affinity"}
	for _, name := range []string{"a", "b", "c"} {
		pool.Backends = append(pool.Backends, NewBackend(name, startEcho(t, name).Addr(), 1))
	}
	srv := &Server{Name: "affinity", Handler: &TCP{Pool: pool, Affinity: AffinitySourceIP, Link: Link{Log: quiet}}, Log: quiet}
	addr := startProxy(t, srv)

	want := pool.Pick("127.0.0.1")[0].Name
	const workers, each = 8, 125
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				name := greetOnce("127.0.0.1", addr)
				mu.Lock()
				seen[name]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 1 || seen[want] != workers*each {
		t.Errorf("1000 connections from 127.0.0.1 reached %v, want all on %s", seen, want)
	}

	spread := map[string]bool{}
	for i := 2; i < 32; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		got, want := greetOnce(ip, addr), pool.Pick(ip)[0].Name
		if got != want {
			t.Errorf("client %s reached %s, want %s", ip, got, want)
		}
		spread[got] = true
	}
	if len(spread) != 3 {
		t.Errorf("30 client addresses reached only %v", spread)
	}
}

// greetOnce opens one session from src, returns the back-end's banner (or
// the error, which no back-end name looks like), and leaves.
func greetOnce(src, addr string) string {
	c, err := dialFrom(src, addr)
	if err != nil {
		return "connect: " + err.Error()
	}
	defer c.conn.Close()
	name, err := c.readLine()
	if err != nil {
		return "banner: " + err.Error()
	}
	return name
}
