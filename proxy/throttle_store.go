//go:build linux

package proxy

import (
	"container/list"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// CounterStore keeps the Throttle's counters: small integers that live a
// fixed time from their first event. The Throttle asks nothing else of
// it, so a store shared by several gatehouse instances (Redis INCR with
// EXPIRE NX) can replace the local one. A networked store
// that cannot answer returns 0 and logs: the throttle then fails open,
// which locks nobody out.
type CounterStore interface {
	// Incr adds one to key's counter and returns the new count. A counter
	// that is absent or expired starts at 1 and lives ttl from now.
	Incr(key string, ttl time.Duration) int
	// Count returns key's counter, 0 when absent or expired.
	Count(key string) int
	// Keep marks key as one to keep: it lives ttl from now and is evicted
	// only after every entry not kept. The Throttle keeps blocks.
	Keep(key string, ttl time.Duration)
	// Delete forgets key.
	Delete(key string)
}

// DefaultMaxEntries is the LocalStore's cap when none is given. An entry
// costs about 200 bytes, so the cap bounds the store near 20 MB.
const DefaultMaxEntries = 100_000

var throttleEvictions = promauto.NewCounter(prometheus.CounterOpts{
	Name: "gatehouse_throttle_evictions_total",
	Help: "Unexpired login-throttle entries dropped because the store reached its cap.",
})

// LocalStore is the in-process CounterStore: a map with a cap on its
// entries. At the cap, adding a key first drops an expired entry, else
// the least recently used entry not kept, and only when every entry is
// kept the least recently used kept one; each unexpired drop counts in
// gatehouse_throttle_evictions_total. A client churning keys thus evicts
// other light entries, never a block.
type LocalStore struct {
	max  int
	now  func() time.Time
	mu   sync.Mutex
	m    map[string]*list.Element
	lru  [2]*list.List // [0] plain entries, [1] kept ones; front is least recent
	evic int64
}

// storeEntry is one counter.
type storeEntry struct {
	key     string
	n       int
	expires time.Time
	kept    bool
}

// NewLocalStore returns a store holding at most max entries; max ≤ 0
// means DefaultMaxEntries.
func NewLocalStore(max int) *LocalStore {
	if max <= 0 {
		max = DefaultMaxEntries
	}
	return &LocalStore{max: max, now: time.Now, m: make(map[string]*list.Element),
		lru: [2]*list.List{list.New(), list.New()}}
}

// Incr implements CounterStore.
func (s *LocalStore) Incr(key string, ttl time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	e := s.live(key, now)
	if e == nil {
		e = s.insert(key, now)
		e.expires = now.Add(ttl)
	}
	e.n++
	return e.n
}

// Count implements CounterStore.
func (s *LocalStore) Count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.live(key, s.now()); e != nil {
		return e.n
	}
	return 0
}

// Keep implements CounterStore.
func (s *LocalStore) Keep(key string, ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	e := s.live(key, now)
	if e == nil {
		return
	}
	e.expires = now.Add(ttl)
	if !e.kept {
		s.lru[0].Remove(s.m[key])
		e.kept = true
		s.m[key] = s.lru[1].PushBack(e)
	}
}

// Delete implements CounterStore.
func (s *LocalStore) Delete(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remove(key)
}

// Len returns the number of entries held, expired ones included until
// they are dropped.
func (s *LocalStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Evictions returns how many unexpired entries the cap has dropped.
func (s *LocalStore) Evictions() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evic
}

// live returns key's unexpired entry, marked most recently used, or nil
// (dropping an expired one).
func (s *LocalStore) live(key string, now time.Time) *storeEntry {
	el := s.m[key]
	if el == nil {
		return nil
	}
	e := el.Value.(*storeEntry)
	if !now.Before(e.expires) {
		s.remove(key)
		return nil
	}
	s.lru[index(e.kept)].MoveToBack(el)
	return e
}

// insert adds a zero entry for key, making room first.
func (s *LocalStore) insert(key string, now time.Time) *storeEntry {
	for len(s.m) >= s.max {
		s.evictOne(now)
	}
	e := &storeEntry{key: key}
	s.m[key] = s.lru[0].PushBack(e)
	return e
}

// evictOne drops one entry: an expired one at the front of either list
// if there is one, else the least recent plain entry, else the least
// recent kept one.
func (s *LocalStore) evictOne(now time.Time) {
	for _, l := range s.lru {
		if f := l.Front(); f != nil && !now.Before(f.Value.(*storeEntry).expires) {
			s.remove(f.Value.(*storeEntry).key)
			return
		}
	}
	l := s.lru[0]
	if l.Len() == 0 {
		l = s.lru[1]
	}
	s.remove(l.Front().Value.(*storeEntry).key)
	s.evic++
	throttleEvictions.Inc()
}

func (s *LocalStore) remove(key string) {
	el := s.m[key]
	if el == nil {
		return
	}
	delete(s.m, key)
	s.lru[index(el.Value.(*storeEntry).kept)].Remove(el)
}

func index(kept bool) int {
	if kept {
		return 1
	}
	return 0
}
