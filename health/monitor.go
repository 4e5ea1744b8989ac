package health

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// Check is one health check of one back-end: a probe run against an
// address on an interval. Its state is kept per (Target, Name), never per
// address: one Exchange server has one check per virtual directory.
type Check struct {
	// Target names the back-end, as in the gatehouse_backend_up metric.
	Target string
	// Name names the check, e.g. "smtp" or "owa".
	Name string
	// Addr is the "host:port" to probe.
	Addr string
	// Probe runs the check; it must not be nil.
	Probe Probe
	// Interval is the time between the end of one probe and the start of
	// the next, varied by up to 10% either way; 0 means 5s.
	Interval time.Duration
	// Timeout bounds one probe; 0 means 3s.
	Timeout time.Duration
	// Rise is the number of consecutive passes that bring a down check up;
	// 0 means 2.
	Rise int
	// Fall is the number of consecutive failures that take an up check
	// down once a probe has confirmed it; 0 means 3. Until that first
	// confirmation, one failure is enough.
	Fall int
}

// withDefaults fills in the zero (or negative) settings.
func (c Check) withDefaults() Check {
	if c.Interval <= 0 {
		c.Interval = 5 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 3 * time.Second
	}
	if c.Rise <= 0 {
		c.Rise = 2
	}
	if c.Fall <= 0 {
		c.Fall = 3
	}
	return c
}

// Transition is a change of a check between up and down.
type Transition struct {
	Target, Check string    // the back-end and the check's name
	Up            bool      // the new state
	Err           error     // the failure that took it down; nil when up
	At            time.Time // when the deciding probe ended
}

// Status is the current state of one check.
type Status struct {
	Target, Check string        // the back-end and the check's name
	Addr          string        // the address probed
	Up            bool          // the state; up (unconfirmed) until probed
	LastErr       string        // the last probe's failure; empty if it passed
	LastLatency   time.Duration // how long the last probe took
	LastProbe     time.Time     // when the last probe started; zero before it
	Since         time.Time     // when the state last changed, or the check was added
}

// Monitor runs one probe per check and reports each change between up and
// down through a callback. Its methods are safe for concurrent use.
type Monitor struct {
	log      *slog.Logger
	onChange func(Transition)

	mu     sync.Mutex
	checks map[checkKey]*entry
	closed bool
	wg     sync.WaitGroup // one count per running probe loop
}

// checkKey identifies a check.
type checkKey struct{ target, name string }

// entry is one check: its state outlives a replacement of its settings.
type entry struct {
	notify sync.Mutex // held from recording a result to the end of its callback

	// Guarded by Monitor.mu.
	run    *runner
	v      verdict
	status Status
}

// runner is one probe loop, with the settings it was started with.
type runner struct {
	check  Check
	ctx    context.Context
	cancel context.CancelFunc
}

// result is the outcome of one probe.
type result struct {
	err     error
	start   time.Time
	latency time.Duration
}

// NewMonitor returns a Monitor that logs to log (nil: slog.Default()) and
// calls onChange (if not nil) on every change between up and down, not for
// the initial, unconfirmed up. onChange runs on the probing goroutine,
// without the Monitor's lock held, one call at a time per check and in the
// order of the changes; it may call any method but Close.
func NewMonitor(log *slog.Logger, onChange func(Transition)) *Monitor {
	return &Monitor{
		log:      cmp.Or(log, slog.Default()),
		onChange: onChange,
		checks:   make(map[checkKey]*entry),
	}
}

// Add starts probing c at once. Adding a check whose (Target, Name) exists
// replaces its address, probe and settings but keeps its up/down state, so
// a reloaded configuration carries health over. Add after Close does
// nothing; a check without a Probe is logged and ignored.
func (m *Monitor) Add(c Check) {
	if c.Probe == nil {
		m.log.Error("health check has no probe", "target", c.Target, "check", c.Name, "addr", c.Addr)
		return
	}
	c = c.withDefaults()
	k := checkKey{c.Target, c.Name}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	e := m.checks[k]
	if e == nil {
		e = &entry{v: verdict{up: true}}
		e.status = Status{Target: c.Target, Check: c.Name, Up: true, Since: time.Now()}
		m.checks[k] = e
		backendUp.WithLabelValues(c.Target, c.Name).Set(1)
	} else {
		e.run.cancel()
		e.v.restart()
	}
	e.status.Addr = c.Addr
	ctx, cancel := context.WithCancel(context.Background())
	e.run = &runner{check: c, ctx: ctx, cancel: cancel}
	m.wg.Add(1)
	go m.loop(e, e.run)
	m.log.Debug("health check started", "target", c.Target, "check", c.Name, "addr", c.Addr,
		"interval", c.Interval, "timeout", c.Timeout, "rise", c.Rise, "fall", c.Fall)
}

// Remove stops a check and forgets its state and metrics. A probe in
// flight is abandoned; its result is not reported.
func (m *Monitor) Remove(target, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := checkKey{target, name}
	if e := m.checks[k]; e != nil {
		e.run.cancel()
		delete(m.checks, k)
		deleteSeries(target, name)
	}
}

// Status returns the state of one check, and false if there is no such check.
func (m *Monitor) Status(target, name string) (Status, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.checks[checkKey{target, name}]; e != nil {
		return e.status, true
	}
	return Status{}, false
}

// Snapshot returns the state of every check, sorted by target, then check.
func (m *Monitor) Snapshot() []Status {
	m.mu.Lock()
	all := make([]Status, 0, len(m.checks))
	for _, e := range m.checks {
		all = append(all, e.status)
	}
	m.mu.Unlock()
	slices.SortFunc(all, func(a, b Status) int {
		return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Check, b.Check))
	})
	return all
}

// Close stops every check, abandoning probes in flight, and waits for the
// probing goroutines to return. The checks' metrics are deleted.
func (m *Monitor) Close() {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		for k, e := range m.checks {
			e.run.cancel()
			deleteSeries(k.target, k.name)
		}
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// loop probes on r's interval until r is cancelled.
func (m *Monitor) loop(e *entry, r *runner) {
	defer m.wg.Done()
	for {
		res := m.probe(r)
		if !m.apply(e, r, res) {
			return
		}
		if !sleep(r.ctx, jitter(r.check.Interval)) {
			return
		}
	}
}

// probe runs r's probe once under its timeout. A panicking probe counts as
// a failure, logged with its stack.
func (m *Monitor) probe(r *runner) (res result) {
	c := r.check
	ctx, cancel := context.WithTimeout(r.ctx, c.Timeout)
	defer cancel()
	res.start = time.Now()
	defer func() {
		res.latency = time.Since(res.start)
		if p := recover(); p != nil {
			res.err = fmt.Errorf("probe panicked: %v", p)
			m.log.Error("health probe panicked", "target", c.Target, "check", c.Name,
				"panic", p, "stack", string(debug.Stack()))
		}
	}()
	res.err = c.Probe.Probe(ctx, c.Addr)
	return res
}

// apply records a result and reports a change, unless r was stopped
// meanwhile; it returns false when r is to stop.
func (m *Monitor) apply(e *entry, r *runner, res result) bool {
	e.notify.Lock()
	defer e.notify.Unlock()
	t, changed, current := m.record(e, r, res)
	if !current {
		return false
	}
	if changed {
		m.report(t, r.check, res)
	}
	return true
}

// record updates the check's state and metrics under the Monitor's lock.
func (m *Monitor) record(e *entry, r *runner, res result) (t Transition, changed, current bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.run != r || r.ctx.Err() != nil {
		return t, false, false
	}
	c, end := r.check, res.start.Add(res.latency)
	outcome, lastErr := "ok", ""
	if res.err != nil {
		outcome, lastErr = "fail", res.err.Error()
	}
	if LocalError(res.err) {
		outcome = "unknown"
	}
	probeDuration.WithLabelValues(c.Target, c.Name).Observe(res.latency.Seconds())
	probesTotal.WithLabelValues(c.Target, c.Name, outcome).Inc()
	e.status.LastErr, e.status.LastLatency, e.status.LastProbe = lastErr, res.latency, res.start
	if outcome == "unknown" {
		m.log.Warn("health probe failed locally; back-end state kept", "target", c.Target, "check", c.Name,
			"addr", c.Addr, "up", e.v.up, "error", res.err)
		return t, false, true
	}
	if !e.v.observe(res.err == nil, c.Rise, c.Fall) {
		return t, false, true
	}
	e.status.Up, e.status.Since = e.v.up, end
	backendUp.WithLabelValues(c.Target, c.Name).Set(gauge(e.v.up))
	t = Transition{Target: c.Target, Check: c.Name, Up: e.v.up, At: end}
	if !e.v.up {
		t.Err = res.err
	}
	return t, true, true
}

// report logs a change and passes it to the callback.
func (m *Monitor) report(t Transition, c Check, res result) {
	attrs := []any{"target", t.Target, "check", t.Check, "addr", c.Addr, "up", t.Up, "latency", res.latency}
	if t.Up {
		m.log.Info("back-end up", attrs...)
	} else {
		m.log.Warn("back-end down", append(attrs, "error", t.Err)...)
	}
	if m.onChange != nil {
		m.onChange(t)
	}
}

// sleep waits d, or less if ctx ends first; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter varies d by up to 10% either way, so that checks started together
// do not probe in lockstep.
func jitter(d time.Duration) time.Duration {
	spread := int64(d) / 5
	if spread <= 0 {
		return d
	}
	return d - time.Duration(spread/2) + time.Duration(rand.Int64N(spread+1))
}

// gauge is the metric value of a state.
func gauge(up bool) float64 {
	if up {
		return 1
	}
	return 0
}

// Suspect takes a check down at once on evidence from outside the probes
// (a proxy whose connects to the back-end keep failing), so that it needs
// rise passing probes to come back. It reports the change like a failed
// probe would; a check that is down already, or unknown, is left as it is.
func (m *Monitor) Suspect(target, name string, why error) {
	m.mu.Lock()
	e, ok := m.checks[checkKey{target, name}]
	m.mu.Unlock()
	if !ok {
		return
	}
	e.notify.Lock()
	defer e.notify.Unlock()
	m.mu.Lock()
	if !e.v.up || e.run == nil {
		m.mu.Unlock()
		return
	}
	c, now := e.run.check, time.Now()
	e.v.up, e.v.confirmed, e.v.passes = false, true, 0
	e.status.Up, e.status.Since, e.status.LastErr = false, now, why.Error()
	backendUp.WithLabelValues(c.Target, c.Name).Set(0)
	m.mu.Unlock()
	m.report(Transition{Target: target, Check: name, Up: false, Err: why, At: now}, c, result{err: why, start: now})
}
