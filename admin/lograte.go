package admin

import (
	"log/slog"
	"sync"
	"time"
)

// Refusals are logged at most refusalBurst lines per reason per
// refusalWindow, so that a page hammering the admin listener cannot flood
// the log; the next line of that reason says how many were left out.
const (
	refusalBurst  = 20
	refusalWindow = time.Minute
)

// refusalLog logs the guard's refusals, rate-limited per reason.
type refusalLog struct {
	log    *slog.Logger
	burst  int
	window time.Duration

	mu      sync.Mutex
	reasons map[string]*logWindow
}

// logWindow counts one reason's lines in the current window.
type logWindow struct {
	start          time.Time
	lines, dropped int
	carried        int // dropped in the previous window, not yet reported
}

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{log: log, burst: refusalBurst, window: refusalWindow, reasons: map[string]*logWindow{}}
}

// warn logs msg unless reason has used its lines of the window.
func (l *refusalLog) warn(reason, msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	w := l.reasons[reason]
	if w == nil || now.Sub(w.start) >= l.window {
		nw := &logWindow{start: now}
		if w != nil {
			nw.carried = w.dropped + w.carried
		}
		w, l.reasons[reason] = nw, nw
	}
	if w.lines >= l.burst {
		w.dropped++
		l.mu.Unlock()
		return
	}
	w.lines++
	suppressed := w.carried
	w.carried = 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Warn(msg, append(args, "reason", reason)...)
}
