package testserver

import "sync"

// Records keeps what a test server saw (logins, messages) in order, safe
// for concurrent use. The zero value holds nothing.
type Records[T any] struct {
	mu   sync.Mutex
	list []T
}

// Add appends v.
func (r *Records[T]) Add(v T) {
	r.mu.Lock()
	r.list = append(r.list, v)
	r.mu.Unlock()
}

// All returns a copy of the records, oldest first; nil when there are none.
func (r *Records[T]) All() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]T(nil), r.list...)
}

// Map returns f of each record, oldest first; empty, not nil, when there
// are none.
func Map[T, U any](r *Records[T], f func(T) U) []U {
	all := r.All()
	out := make([]U, len(all))
	for i, v := range all {
		out[i] = f(v)
	}
	return out
}
