package gatehouse

import (
	"sync"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// listenerTotals keeps each listener name's session counters across
// reloads. The counts themselves live in a listener's proxy.Server
// (accepted, refused) and proxy.Pools (no back-end), which a reload
// replaces; so the totals of a name are what its finished generations
// left plus what its live ones count now. A generation is finished, and
// folded into the carried sum, once a later reload has superseded it and
// its server holds no session: it then accepts nothing and routes nothing.
// Objects that a reload keeps (the same server or pool in two
// generations) are counted once.
type listenerTotals struct {
	mu     sync.Mutex
	byName map[string]*nameTotals
}

// nameTotals are one listener name's generations.
type nameTotals struct {
	carried    sessionCounts
	current    *listener   // the generation served last
	superseded []*listener // earlier ones, still counted live
}

// sessionCounts are a listener's counters as the status shows them.
type sessionCounts struct {
	active                       int
	sessions, refused, noBackend uint64
}

// served records that a listener generation starts serving. Generations
// superseded at an earlier call whose sessions are over are folded.
func (t *listenerTotals) served(l *listener) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byName == nil {
		t.byName = map[string]*nameTotals{}
	}
	e := t.byName[l.cfg.Name]
	if e == nil {
		e = &nameTotals{}
		t.byName[l.cfg.Name] = e
	}
	if e.current == l {
		return
	}
	keep := []*listener{l}
	var done []*listener
	for _, g := range e.superseded {
		if g.server.Sessions() == 0 {
			done = append(done, g)
		} else {
			keep = append(keep, g)
		}
	}
	if e.current != nil {
		keep = append(keep, e.current)
	}
	e.carried = e.carried.plus(distinctCounts(done, keep))
	e.superseded, e.current = keep[1:], l
}

// counts returns the totals of l's name, l itself included.
func (t *listenerTotals) counts(l *listener) sessionCounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	gens := []*listener{l}
	var c sessionCounts
	if e := t.byName[l.cfg.Name]; e != nil {
		c = e.carried
		gens = append(gens, e.superseded...)
		if e.current != nil {
			gens = append(gens, e.current)
		}
	}
	return c.plus(distinctCounts(gens, nil))
}

// distinctCounts sums the counters of the servers and pools of gens, each
// object once, leaving out those that also belong to a listener of except
// (they are still counted there).
func distinctCounts(gens, except []*listener) sessionCounts {
	servers := map[*proxy.Server]bool{}
	pools := map[*proxy.Pool]bool{}
	for _, l := range except {
		servers[l.server] = true
		for _, p := range l.pools {
			pools[p] = true
		}
	}
	var c sessionCounts
	for _, l := range gens {
		if !servers[l.server] {
			servers[l.server] = true
			accepted, refused := l.server.Stats()
			c.active += l.server.Active()
			c.sessions += accepted
			c.refused += refused
		}
		for _, p := range l.pools {
			if !pools[p] {
				pools[p] = true
				c.noBackend += p.Failures()
			}
		}
	}
	return c
}

func (c sessionCounts) plus(d sessionCounts) sessionCounts {
	return sessionCounts{
		active:    c.active + d.active,
		sessions:  c.sessions + d.sessions,
		refused:   c.refused + d.refused,
		noBackend: c.noBackend + d.noBackend,
	}
}
