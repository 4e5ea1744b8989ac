package health

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fast is the interval of the Monitor tests.
const fast = 2 * time.Millisecond

// scripted is a fake probe: it returns its results in order, then repeats
// the last, and counts its calls.
type scripted struct {
	mu      sync.Mutex
	results []error
	calls   int
}

// pass, fail and stall spell a script; stall blocks until the probe's
// context ends.
var (
	pass  error
	fail  = errors.New("refused")
	stall = errors.New("stall")
)

// play returns a probe that gives these results.
func play(results ...error) *scripted { return &scripted{results: results} }

// Probe returns the next result.
func (s *scripted) Probe(ctx context.Context, _ string) error {
	s.mu.Lock()
	err := s.results[min(s.calls, len(s.results)-1)]
	s.calls++
	s.mu.Unlock()
	if err == stall {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

// count returns the calls so far.
func (s *scripted) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// change is a transition seen by the callback, with the number of probes
// the check's probe had run by then.
type change struct {
	Transition
	calls int
}

// watcher records a Monitor's transitions.
type watcher struct {
	mu   sync.Mutex
	seen []change
}

// watch returns a Monitor whose callback records into w, with the value of
// calls (if not nil) at each change; the Monitor closes when the test ends.
func watch(t *testing.T, calls func() int) (*Monitor, *watcher) {
	w := &watcher{}
	var m *Monitor
	m = NewMonitor(quietLog(), func(tr Transition) {
		// The callback runs without the Monitor's lock: Status must not block.
		if st, ok := m.Status(tr.Target, tr.Check); !ok || st.Up != tr.Up {
			t.Errorf("Status during the callback: %+v, %v; want Up %v", st, ok, tr.Up)
		}
		c := change{Transition: tr}
		if calls != nil {
			c.calls = calls()
		}
		w.mu.Lock()
		w.seen = append(w.seen, c)
		w.mu.Unlock()
	})
	t.Cleanup(m.Close)
	return m, w
}

// changes returns the transitions so far.
func (w *watcher) changes() []change {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]change(nil), w.seen...)
}

// waitChanges waits until n transitions were seen and returns them.
func (w *watcher) waitChanges(t *testing.T, n int) []change {
	t.Helper()
	waitFor(t, "transitions", func() bool { return len(w.changes()) >= n })
	return w.changes()
}

// A back-end dead at start goes down on its first probe, with the failure.
func TestMonitorDeadAtStart(t *testing.T) {
	p := play(fail)
	m, w := watch(t, p.count)
	m.Add(Check{Target: "exch1", Name: "owa", Addr: "192.0.2.1:443", Probe: p, Interval: fast})
	got := w.waitChanges(t, 1)[0]
	if got.Up || got.calls != 1 || !errors.Is(got.Err, fail) || got.Target != "exch1" || got.Check != "owa" {
		t.Fatalf("first change %+v, want exch1/owa down after 1 probe with the failure", got)
	}
	st, _ := m.Status("exch1", "owa")
	if st.Up || st.LastErr != "refused" || st.Addr != "192.0.2.1:443" || st.LastProbe.IsZero() {
		t.Errorf("status %+v, want down with the last error", st)
	}
	if v := testutil.ToFloat64(backendUp.WithLabelValues("exch1", "owa")); v != 0 {
		t.Errorf("gatehouse_backend_up = %v, want 0", v)
	}
}

// Once confirmed, a check needs fall failures in a row to go down, and
// then rise passes in a row to come back; the initial up is not reported.
func TestMonitorRiseFall(t *testing.T) {
	p := play(pass, fail, fail, pass, fail, fail, fail, fail, pass, fail, pass, pass, pass)
	m, w := watch(t, p.count)
	m.Add(Check{Target: "mx1", Name: "smtp", Addr: "192.0.2.1:25", Probe: p, Interval: fast, Rise: 2, Fall: 3})
	waitFor(t, "the script to run out", func() bool { return p.count() > 14 })
	got := w.changes()
	if len(got) != 2 || got[0].Up || got[0].calls != 7 || !got[1].Up || got[1].calls != 12 {
		t.Fatalf("changes %+v, want down at probe 7 and up at probe 12", got)
	}
	if got[1].Err != nil {
		t.Errorf("the up change carries error %v", got[1].Err)
	}
	st, _ := m.Status("mx1", "smtp")
	if !st.Up || st.LastErr != "" || !st.Since.Equal(got[1].At) {
		t.Errorf("status %+v, want up since %v", st, got[1].At)
	}
}

// Replacing a check keeps its state: a down back-end stays down under its
// new settings until rise passes of the new probe; a pass of the old probe
// does not count toward them.
func TestMonitorAddReplaceKeepsState(t *testing.T) {
	old, next := play(fail, pass, stall), play(pass)
	m, w := watch(t, next.count)
	m.Add(Check{Target: "imap1", Name: "imap", Addr: "192.0.2.1:143", Probe: old, Interval: fast, Timeout: time.Hour, Rise: 3})
	waitFor(t, "the old probe to stall", func() bool { return old.count() == 3 })
	down, _ := m.Status("imap1", "imap")

	m.Add(Check{Target: "imap1", Name: "imap", Addr: "192.0.2.2:143", Probe: next, Interval: 20 * time.Millisecond, Rise: 3})
	st, _ := m.Status("imap1", "imap")
	if st.Up || st.Addr != "192.0.2.2:143" || !st.Since.Equal(down.Since) {
		t.Fatalf("status right after the replacement %+v, want still down since %v at the new address", st, down.Since)
	}
	got := w.waitChanges(t, 2)
	if got[0].Up || !got[1].Up || got[1].calls != 3 {
		t.Fatalf("changes %+v, want down, then up at the new probe's third pass", got)
	}
	waitFor(t, "three more probes", func() bool { return next.count() >= 6 })
	if old.count() != 3 {
		t.Errorf("the replaced probe ran %d times, want 3", old.count())
	}
	if len(w.changes()) != 2 {
		t.Errorf("changes %+v, want just down and up", w.changes())
	}
}

// The timeout bounds each probe; a probe that overruns it fails with
// context.DeadlineExceeded.
func TestMonitorTimeout(t *testing.T) {
	hang := ProbeFunc(func(ctx context.Context, _ string) error {
		<-ctx.Done()
		return ctx.Err()
	})
	m, w := watch(t, nil)
	m.Add(Check{Target: "web1", Name: "owa", Addr: "192.0.2.1:443", Probe: hang, Interval: fast, Timeout: 30 * time.Millisecond})
	got := w.waitChanges(t, 1)[0]
	if !errors.Is(got.Err, context.DeadlineExceeded) {
		t.Fatalf("change %+v, want a deadline exceeded", got)
	}
	if st, _ := m.Status("web1", "owa"); st.LastLatency < 30*time.Millisecond || st.LastLatency > time.Second {
		t.Errorf("last latency %v, want about 30ms", st.LastLatency)
	}
}

// Snapshot lists every check sorted by target, then check; Remove forgets
// one, with its metrics.
func TestMonitorSnapshotAndRemove(t *testing.T) {
	m, _ := watch(t, nil)
	for _, c := range []Check{{Target: "snap-b", Name: "x"}, {Target: "snap-a", Name: "y"}, {Target: "snap-a", Name: "x"}} {
		c.Addr, c.Probe, c.Interval = "192.0.2.1:1", play(pass), fast
		m.Add(c)
	}
	var names []string
	for _, st := range m.Snapshot() {
		names = append(names, st.Target+"/"+st.Check)
	}
	if strings.Join(names, " ") != "snap-a/x snap-a/y snap-b/x" {
		t.Fatalf("snapshot order %q", names)
	}
	waitFor(t, "a probe of snap-a/y", func() bool { st, _ := m.Status("snap-a", "y"); return !st.LastProbe.IsZero() })
	if series(t, "snap-a", "y") == 0 {
		t.Fatal("no metrics for snap-a/y")
	}
	m.Remove("snap-a", "y")
	if _, ok := m.Status("snap-a", "y"); ok {
		t.Error("Status still knows a removed check")
	}
	if n := series(t, "snap-a", "y"); n != 0 {
		t.Errorf("%d series left for a removed check", n)
	}
	if len(m.Snapshot()) != 2 {
		t.Errorf("snapshot %+v, want two checks", m.Snapshot())
	}
}

// series counts the metric series of one check in the default registry.
func series(t *testing.T, target, check string) int {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range families {
		for _, metric := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["backend"] == target && labels["check"] == check {
				n++
			}
		}
	}
	return n
}

// Close stops every probe, even one in flight, and returns only once no
// probing goroutine is left; no callback follows it.
func TestMonitorCloseLeavesNoGoroutine(t *testing.T) {
	started := make(chan struct{}, 1)
	hang := ProbeFunc(func(ctx context.Context, _ string) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	})
	m, w := watch(t, nil)
	m.Add(Check{Target: "close1", Name: "hang", Addr: "192.0.2.1:1", Probe: hang, Timeout: time.Hour})
	m.Add(Check{Target: "close1", Name: "up", Addr: "192.0.2.1:2", Probe: play(pass), Interval: fast})
	m.Add(Check{Target: "close1", Name: "down", Addr: "192.0.2.1:3", Probe: play(fail), Interval: fast})
	<-started
	w.waitChanges(t, 1)
	if n := probeLoops(); n != 3 {
		t.Fatalf("%d probe loops running, want 3", n)
	}
	begin := time.Now()
	m.Close()
	if took := time.Since(begin); took > time.Second {
		t.Errorf("Close took %v with a probe in flight", took)
	}
	if n := probeLoops(); n != 0 {
		t.Fatalf("%d probe loops still running after Close", n)
	}
	if got := w.changes(); len(got) != 1 {
		t.Errorf("changes %+v, want only the down of close1/down", got)
	}
	m.Add(Check{Target: "close1", Name: "late", Addr: "192.0.2.1:4", Probe: play(pass)})
	if n := probeLoops(); n != 0 {
		t.Errorf("Add after Close started %d probe loops", n)
	}
}

// probeLoops counts the goroutines that Monitor.Add started (running their
// probe loop, or about to) and that have not returned.
func probeLoops() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "created by github.com/gatehouse-proxy/gatehouse/health.(*Monitor).Add")
}

// Every change is logged with the back-end, check, address, state, error
// and latency.
func TestMonitorLogsChanges(t *testing.T) {
	logs := &lockedBuffer{}
	m := NewMonitor(slog.New(slog.NewJSONHandler(logs, nil)), nil)
	defer m.Close()
	m.Add(Check{Target: "log1", Name: "pop3", Addr: "192.0.2.1:110", Probe: play(fail), Interval: fast})
	var rec map[string]any
	waitFor(t, "a log line", func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "back-end down" {
				return true
			}
		}
		return false
	})
	for key, want := range map[string]any{"target": "log1", "check": "pop3", "addr": "192.0.2.1:110", "up": false, "error": "refused"} {
		if rec[key] != want {
			t.Errorf("log %s = %v, want %v", key, rec[key], want)
		}
	}
	if _, ok := rec["latency"]; !ok {
		t.Error("log line has no latency")
	}
}

// A Monitor drives a real probe: an SMTP back-end that goes away is down
// after fall failures.
func TestMonitorWithSMTPProbe(t *testing.T) {
	ms := startMailServer(t, nil, false)
	m, w := watch(t, nil)
	m.Add(Check{Target: "mx9", Name: "smtp", Addr: ms.addr, Probe: &SMTP{}, Interval: 10 * time.Millisecond, Fall: 2})
	waitFor(t, "a passed probe", func() bool { st, _ := m.Status("mx9", "smtp"); return !st.LastProbe.IsZero() && st.LastErr == "" })
	m.Add(Check{Target: "mx9", Name: "smtp", Addr: wiretest.FreeAddr(t), Probe: &SMTP{}, Interval: 10 * time.Millisecond, Fall: 2})
	got := w.waitChanges(t, 1)[0]
	if got.Up || stageOf(got.Err) != StageConnect {
		t.Fatalf("change %+v, want down at stage connect", got)
	}
	if got := ms.sessionsTLS(); len(got) == 0 {
		t.Error("the SMTP server saw no session")
	}
}

// A check without a probe is refused, not run.
func TestMonitorAddWithoutProbe(t *testing.T) {
	m, _ := watch(t, nil)
	m.Add(Check{Target: "noprobe", Name: "smtp", Addr: "192.0.2.1:25"})
	if _, ok := m.Status("noprobe", "smtp"); ok {
		t.Error("a check without a probe was added")
	}
}
