//go:build linux

package proxy

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// LogLimiter rate-limits log lines about clients: at most one line per
// reason and client address per Interval, so that a flood of bad
// requests or timeouts from one address (or from many) cannot flood the
// log. The first line of a window is written; the others of that window
// are counted, and the next line written for the same reason and address
// carries that count as "suppressed". When MaxKeys addresses are in their
// window already, further addresses share one key per reason ("*"), so
// memory stays bounded too. The zero value is ready: one minute, 4096
// keys. It is safe for concurrent use.
type LogLimiter struct {
	// Interval is the window per reason and address; 0 means one minute.
	Interval time.Duration
	// MaxKeys bounds the reasons and addresses remembered; 0 means 4096.
	MaxKeys int

	mu    sync.Mutex
	seen  map[logKey]*logWindow
	swept time.Time
}

type logKey struct{ reason, addr string }

type logWindow struct {
	start      time.Time
	suppressed int
}

// Log writes msg at level with attrs, "reason" and, when lines were held
// back since the last one, "suppressed", unless a line for reason and
// addr was written less than Interval ago. It reports whether it wrote.
func (l *LogLimiter) Log(ctx context.Context, log *slog.Logger, level slog.Level, msg, reason, addr string, attrs ...any) bool {
	return l.logAt(ctx, time.Now(), log, level, msg, reason, addr, attrs...)
}

func (l *LogLimiter) logAt(ctx context.Context, now time.Time, log *slog.Logger, level slog.Level, msg, reason, addr string, attrs ...any) bool {
	if !log.Enabled(ctx, level) {
		return false
	}
	ok, suppressed := l.allow(reason, addr, now)
	if !ok {
		return false
	}
	attrs = append(attrs, "reason", reason)
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	log.Log(ctx, level, msg, attrs...)
	return true
}

// allow counts one event and reports whether its line is written, with
// the number of lines held back before it.
func (l *LogLimiter) allow(reason, addr string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	interval, limit := l.limits()
	if l.seen == nil {
		l.seen = make(map[logKey]*logWindow)
	}
	k := logKey{reason, addr}
	w := l.seen[k]
	if w == nil && len(l.seen) >= limit {
		l.sweep(now, interval)
		if len(l.seen) >= limit {
			k = logKey{reason, "*"}
			w = l.seen[k]
		}
	}
	if w != nil && now.Sub(w.start) < interval {
		w.suppressed++
		return false, 0
	}
	n := 0
	if w != nil {
		n = w.suppressed
	}
	l.seen[k] = &logWindow{start: now}
	return true, n
}

func (l *LogLimiter) limits() (time.Duration, int) {
	interval, limit := l.Interval, l.MaxKeys
	if interval <= 0 {
		interval = time.Minute
	}
	if limit <= 0 {
		limit = 4096
	}
	return interval, limit
}

// sweep forgets windows that have ended (with what they held back), at
// most four times per interval: a flood of new addresses would otherwise
// make every event scan the map.
func (l *LogLimiter) sweep(now time.Time, interval time.Duration) {
	if now.Sub(l.swept) < interval/4 {
		return
	}
	l.swept = now
	for k, w := range l.seen {
		if now.Sub(w.start) >= interval {
			delete(l.seen, k)
		}
	}
}

// refusalLogInterval is how often a Server logs one refusal reason: a
// flood of refused connections must not flood the log.
const refusalLogInterval = 10 * time.Second
