//go:build linux

package proxy

import (
	"sync"
	"time"
)

// refusalLogInterval is how often a Server logs one refusal reason: a
// flood of refused connections must not flood the log.
const refusalLogInterval = 10 * time.Second

// logLimit lets one log line per key through per interval and counts the
// ones it held back, for the next line to report.
type logLimit struct {
	mu   sync.Mutex
	keys map[string]*limitedKey
}

type limitedKey struct {
	last       time.Time
	suppressed int
}

// allow reports whether a line for key may be logged now, and how many
// were held back since the last one.
func (l *logLimit) allow(key string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = make(map[string]*limitedKey)
	}
	k := l.keys[key]
	if k == nil {
		k = &limitedKey{}
		l.keys[key] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < refusalLogInterval {
		k.suppressed++
		return false, 0
	}
	suppressed, k.suppressed, k.last = k.suppressed, 0, now
	return true, suppressed
}
