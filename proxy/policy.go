//go:build linux

package proxy

import (
	"fmt"
	"math"
	"slices"
	"sync"
)

// Policy orders the usable back-ends of a pool for one new session: the
// first is dialed first, the rest are the failover order. It does no I/O.
type Policy interface {
	Order(key string, usable []*Backend) []*Backend
}

// Balancing policies and affinities, as the config spells them.
const (
	RoundRobin = "round-robin"
	LeastConn  = "least-conn"
)

// NewPolicy returns the balancing policy of the given name: "round-robin"
// (weighted; the default when name is empty) or "least-conn".
func NewPolicy(name string) (Policy, error) {
	switch name {
	case "", RoundRobin:
		return &WeightedRoundRobin{}, nil
	case LeastConn:
		return LeastConnections{}, nil
	}
	return nil, fmt.Errorf("unknown balance %q (want %s or %s)", name, RoundRobin, LeastConn)
}

// WeightedRoundRobin spreads sessions in proportion to weight with the
// smooth algorithm nginx uses, so a weight-2 back-end gets every other
// session rather than two in a row. The zero value is ready to use.
type WeightedRoundRobin struct {
	mu      sync.Mutex
	current map[string]int // back-end name → current weight
}

// Order puts the back-end the smooth weighted round-robin picks first and
// the others after it in their given order.
func (p *WeightedRoundRobin) Order(_ string, usable []*Backend) []*Backend {
	if len(usable) <= 1 {
		return usable
	}
	p.mu.Lock()
	if p.current == nil {
		p.current = make(map[string]int)
	}
	total, best := 0, 0
	for i, b := range usable {
		w := b.weight()
		total += w
		p.current[b.Name] += w
		if p.current[b.Name] > p.current[usable[best].Name] {
			best = i
		}
	}
	p.current[usable[best].Name] -= total
	p.mu.Unlock()
	return firstThenRest(usable, best)
}

// LeastConnections puts the back-end with the fewest live sessions per unit
// of weight first; ties keep the given order.
type LeastConnections struct{}

// Order sorts by live sessions divided by weight.
func (LeastConnections) Order(_ string, usable []*Backend) []*Backend {
	out := slices.Clone(usable)
	slices.SortStableFunc(out, func(a, b *Backend) int {
		la := float64(a.Active()) / float64(a.weight())
		lb := float64(b.Active()) / float64(b.weight())
		switch {
		case la < lb:
			return -1
		case la > lb:
			return 1
		}
		return 0
	})
	return out
}

// Rendezvous orders back-ends by weighted highest-random-weight hashing of
// the key with each back-end's name. Every process with the same back-end
// names and weights computes the same order for a key, and removing one of
// N back-ends moves only the keys it held (about 1/N). An empty key falls
// back to Fallback, or to the given order when Fallback is nil.
type Rendezvous struct {
	Fallback Policy
}

// Order sorts back-ends by descending score for the key.
func (r *Rendezvous) Order(key string, usable []*Backend) []*Backend {
	if key == "" {
		if r.Fallback == nil {
			return usable
		}
		return r.Fallback.Order(key, usable)
	}
	type scored struct {
		b     *Backend
		score float64
	}
	s := make([]scored, len(usable))
	for i, b := range usable {
		s[i] = scored{b, rendezvousScore(key, b)}
	}
	slices.SortFunc(s, func(x, y scored) int {
		switch {
		case x.score > y.score:
			return -1
		case x.score < y.score:
			return 1
		}
		return 0
	})
	out := make([]*Backend, len(s))
	for i := range s {
		out[i] = s[i].b
	}
	return out
}

// rendezvousScore is the weighted HRW score -w/ln(h) with h the key's hash
// with the back-end's name mapped into (0,1) (Schindelhauer and Schomaker's
// weighted variant: a back-end of weight 2 wins twice as many keys).
func rendezvousScore(key string, b *Backend) float64 {
	h := hash64(key, b.Name)
	u := (float64(h>>11) + 0.5) / (1 << 53) // in (0,1), never 0 or 1
	return -float64(b.weight()) / math.Log(u)
}

// hash64 is FNV-1a over key, a separator and name, finished with the
// splitmix64 mixer so that similar keys spread evenly. It is fixed forever:
// changing it would move every key of every running farm.
func hash64(key, name string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * prime
	}
	h = (h ^ 0xff) * prime
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * prime
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// firstThenRest returns bs with bs[i] moved to the front.
func firstThenRest(bs []*Backend, i int) []*Backend {
	out := make([]*Backend, 0, len(bs))
	out = append(out, bs[i])
	out = append(out, bs[:i]...)
	return append(out, bs[i+1:]...)
}
