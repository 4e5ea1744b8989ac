//go:build linux

package proxy

import (
	"net/netip"
	"sync"
)

// Gate holds one listener's connection counts: sessions per client
// address and per listening address. The counts outlive a Server: the
// caller keeps one Gate per listener across configuration generations
// and gives it to each new Server of that listener, so the sessions an
// old Server still serves after a reload count against the new Server's
// MaxPerIP and MaxConns, and a reload resets no limit. The limits
// themselves are the Server's: a reload that changes them applies the new
// values to the combined count. A Gate is safe for concurrent use.
type Gate struct {
	mu    sync.Mutex
	perIP map[netip.Addr]int
	slots map[string]int // sessions by listening address
	freed chan struct{}  // closed and replaced when a slot frees
}

// NewGate returns an empty Gate.
func NewGate() *Gate {
	return &Gate{perIP: make(map[netip.Addr]int), slots: make(map[string]int), freed: make(chan struct{})}
}

// PerIP returns the sessions counted for a client address.
func (g *Gate) PerIP(ip netip.Addr) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.perIP[ip]
}

// acquireSlot takes one of max slots of the listening address addr,
// waiting while all are taken (max ≤ 0: no cap) until draining or
// released is closed; it reports whether it took one.
func (g *Gate) acquireSlot(addr string, max int, draining, released <-chan struct{}) bool {
	for {
		g.mu.Lock()
		if max <= 0 || g.slots[addr] < max {
			g.slots[addr]++
			g.mu.Unlock()
			return true
		}
		freed := g.freed
		g.mu.Unlock()
		select {
		case <-freed:
		case <-draining:
			return false
		case <-released:
			return false
		}
	}
}

// releaseSlot gives back a slot of addr and wakes the waiters.
func (g *Gate) releaseSlot(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.slots[addr]--; g.slots[addr] <= 0 {
		delete(g.slots, addr)
	}
	close(g.freed)
	g.freed = make(chan struct{})
}

// admitIP counts a session of ip unless max (> 0) are counted already.
func (g *Gate) admitIP(ip netip.Addr, max int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if max > 0 && g.perIP[ip] >= max {
		return false
	}
	g.perIP[ip]++
	return true
}

// releaseIP forgets one session of ip.
func (g *Gate) releaseIP(ip netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
}
