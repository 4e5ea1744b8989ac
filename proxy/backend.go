//go:build linux

package proxy

import (
	"sync"
	"sync/atomic"
)

// AdminState is what an operator has asked of a back-end.
type AdminState int32

// Admin states. The zero value, Enabled, takes new sessions.
const (
	Enabled  AdminState = iota // takes new sessions
	Draining                   // no new sessions; live ones finish
	Disabled                   // no new sessions; live ones are closed by the caller
)

// String returns the state as the admin API and the status page spell it.
func (s AdminState) String() string {
	switch s {
	case Draining:
		return "draining"
	case Disabled:
		return "disabled"
	}
	return "enabled"
}

// Backend is one server of a pool: a name shared by every gatehouse with the
// same config (affinity hashes on it), the address dialed, and live state.
// A Backend is safe for concurrent use.
type Backend struct {
	// Name identifies the back-end in config, logs, metrics and hashing.
	Name string
	// Addr is the "host:port" dialed.
	Addr string
	// Weight scales the back-end's share of new sessions; 0 means 1.
	// SetWeight changes it on a back-end in use.
	Weight int

	weightSet atomic.Int32 // SetWeight's value; 0: Weight stands

	healthy  atomic.Bool  // last verdict of active health checks
	passive  atomic.Bool  // taken out by consecutive dial failures
	fails    atomic.Int32 // consecutive dial failures
	admin    atomic.Int32 // AdminState
	active   atomic.Int64 // live sessions
	sessions sync.Map     // *session → struct{}, for closing on disable
}

// NewBackend returns an enabled, healthy back-end.
func NewBackend(name, addr string, weight int) *Backend {
	b := &Backend{Name: name, Addr: addr, Weight: weight}
	b.healthy.Store(true)
	return b
}

// weight returns the effective weight (at least 1).
func (b *Backend) weight() int {
	if w := b.weightSet.Load(); w > 0 {
		return int(w)
	}
	if b.Weight <= 0 {
		return 1
	}
	return b.Weight
}

// SetWeight changes the back-end's share of new sessions while it serves
// (a reload that changes only the weight keeps the Backend and its live
// sessions); w ≤ 0 means 1.
func (b *Backend) SetWeight(w int) { b.weightSet.Store(int32(max(w, 1))) }

// SetHealthy records the verdict of active health checks. A healthy verdict
// also ends a passive outage: the monitor has seen the back-end answer.
func (b *Backend) SetHealthy(up bool) {
	b.healthy.Store(up)
	if up {
		b.passive.Store(false)
		b.fails.Store(0)
	}
}

// Healthy reports the active health verdict and that no passive outage holds.
func (b *Backend) Healthy() bool { return b.healthy.Load() && !b.passive.Load() }

// SetAdmin sets the operator's state for the back-end.
func (b *Backend) SetAdmin(s AdminState) { b.admin.Store(int32(s)) }

// Admin returns the operator's state for the back-end.
func (b *Backend) Admin() AdminState { return AdminState(b.admin.Load()) }

// Usable reports whether the back-end may take a new session.
func (b *Backend) Usable() bool { return b.Admin() == Enabled && b.Healthy() }

// Active returns the number of live sessions on the back-end.
func (b *Backend) Active() int64 { return b.active.Load() }

// dialFailed counts a failed dial and reports whether it just crossed the
// passive-health threshold (limit ≤ 0 disables passive health).
func (b *Backend) dialFailed(limit int) bool {
	n := b.fails.Add(1)
	if limit <= 0 || int(n) < limit {
		return false
	}
	return !b.passive.Swap(true)
}

// dialSucceeded resets the consecutive failure count.
func (b *Backend) dialSucceeded() {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
}

// closer is anything a disabled back-end's sessions can be closed with.
type closer interface{ Close() error }

// Track registers a live session on the back-end until the returned release
// function is called; CloseSessions closes every tracked one.
func (b *Backend) Track(c closer) (release func()) {
	b.active.Add(1)
	key := &c
	b.sessions.Store(key, c)
	return func() {
		b.sessions.Delete(key)
		b.active.Add(-1)
	}
}

// TrackSession is Track plus the per-back-end gauge
// gatehouse_backend_sessions_active{pool,backend}: every frontend counts
// its back-end sessions through it, so the gauge covers every protocol.
func TrackSession(pool string, b *Backend, conn closer) (release func()) {
	untrack := b.Track(conn)
	g := backendSessions.WithLabelValues(pool, b.Name)
	g.Inc()
	return func() {
		g.Dec()
		untrack()
	}
}

// CloseSessions closes every live session on the back-end (used when an
// operator disables it) and returns how many it closed.
func (b *Backend) CloseSessions() int {
	n := 0
	b.sessions.Range(func(_, v any) bool {
		v.(closer).Close()
		n++
		return true
	})
	return n
}
