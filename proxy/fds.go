//go:build linux

package proxy

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
)

// SessionFDs is what one client session is charged in descriptors: the
// client's socket and one back-end connection (every gatehouse protocol
// relays; an HTTPS client may briefly hold more, which the reserve covers).
const SessionFDs = 2

// FDReserve returns how many of limit descriptors are kept from client
// sessions for everything else: the admin listener, health probes,
// listening sockets, log and certificate files, and the back-end dials
// beyond SessionFDs. The formula is max(64, limit/20).
func FDReserve(limit int) int { return max(64, limit/20) }

// FDBudget is the share of the process's descriptors that client sessions
// may hold. A Server charges SessionFDs to it for each accepted
// connection before serving it, and refuses the connection at once
// (reason fd_reserve) when the budget is spent: a flood of connections
// then meets refusals while the admin port answers and the health probes
// can still connect, instead of the process running out of descriptors.
// Safe for concurrent use.
type FDBudget struct {
	max  int64
	used atomic.Int64
}

// NewFDBudget returns a budget of max descriptors.
func NewFDBudget(max int) *FDBudget { return &FDBudget{max: int64(max)} }

// ProcessFDBudget returns the budget every Server without its own shares:
// the RLIMIT_NOFILE soft limit the process runs with (Go raises it to the
// hard limit at start), less FDReserve of it. It is read on first use.
func ProcessFDBudget() *FDBudget { return processFDs() }

var processFDs = sync.OnceValue(func() *FDBudget {
	limit := 1024 // the usual soft limit, if the real one cannot be read
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > 0 {
		limit = int(min(rl.Cur, 1<<30))
	}
	return NewFDBudget(limit - FDReserve(limit))
})

// Max returns the budget's size.
func (b *FDBudget) Max() int { return int(b.max) }

// InUse returns the descriptors charged now.
func (b *FDBudget) InUse() int { return int(b.used.Load()) }

// take charges n descriptors unless that would exceed the budget.
func (b *FDBudget) take(n int) bool {
	if b.used.Add(int64(n)) > b.max {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

// give returns n descriptors.
func (b *FDBudget) give(n int) { b.used.Add(-int64(n)) }

// localError reports whether a dial failed for a reason of this process
// or host (out of descriptors, buffers or local ports), which says nothing
// about the back-end: such failures never count towards passive health.
// health.LocalError keeps the same list; this package does not import it.
func localError(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}
