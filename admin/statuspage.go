package admin

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"html/template"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The status page at the admin listener's "/": one row per back-end, one
// column per listener (that listener's check of the back-end), the
// listeners' session and error rates, and the recent state changes.
//
// Invariants:
//   - everything on it comes from Status, which holds no token, password or
//     key; html/template escapes every value (a back-end's error text is
//     the back-end's to choose, so it is hostile until escaped);
//   - the page carries no script, and its Content-Security-Policy forbids
//     any, so an escaping slip still cannot run code;
//   - the rate sampler's goroutine is counted in Admin.wg and ends with
//     Admin.ctx, so it never outlives Close.

//go:embed web/status.html
var webFiles embed.FS

var statusTemplate = template.Must(template.ParseFS(webFiles, "web/status.html"))

// Refresh intervals of the status page, in seconds; ?refresh=N picks
// another within the bounds.
const (
	defaultRefresh = 5
	maxRefresh     = 3600
)

// sampleEvery is how often the status page samples the listeners' counters
// to compute rates.
const sampleEvery = 5 * time.Second

// statusPage serves the status page of one Server.
type statusPage struct {
	srv     Server
	log     *slog.Logger
	sampler *rateSampler
}

// newStatusPage returns the page and its rate sampler, which samples
// every interval once the page is first asked for; its run is the
// caller's to start.
func newStatusPage(srv Server, log *slog.Logger, every time.Duration) *statusPage {
	return &statusPage{srv: srv, log: log, sampler: newRateSampler(func() map[string]counters { return listenerCounters(srv) }, every)}
}

// listenerCounters reads every listener's session counters.
func listenerCounters(srv Server) map[string]counters {
	m := map[string]counters{}
	for _, l := range srv.Listeners() {
		m[l.Name] = counters{sessions: l.Sessions, refused: l.Refused, noBackend: l.NoBackend}
	}
	return m
}

// ServeHTTP renders the page; ?refresh=N sets the refresh interval.
func (p *statusPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.sampler.start()
	now := time.Now()
	data := buildPage(Snapshot(p.srv), p.sampler.rates(), now)
	data.Refresh = refreshSeconds(r.URL.Query().Get("refresh"))
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, data); err != nil {
		p.log.Error("status page", "err", err)
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	w.Write(buf.Bytes())
}

// refreshSeconds parses the refresh query parameter: whole seconds from 1
// to maxRefresh; anything else means defaultRefresh.
func refreshSeconds(q string) int {
	n, err := strconv.Atoi(q)
	if err != nil || n < 1 || n > maxRefresh {
		return defaultRefresh
	}
	return n
}

// pageData is what web/status.html renders.
type pageData struct {
	Generated string
	Refresh   int
	Columns   []string // one per health check: the listener's name, or "listener/service"
	Listeners []pageListener
	Backends  []pageBackend
	Changes   []pageChange
	Pending   []pagePending // certificate sets serving a temporary certificate
}

// pagePending is a certificate set still waiting for its certificate.
type pagePending struct {
	Set, Names, Since, NextTry, LastError string
	Attempts                              int
}

// pageListener is one listener's summary and the head of its column.
type pageListener struct {
	Name, Protocol, Addrs        string
	Active                       int
	Sessions, Refused, NoBackend uint64
	Rate, ErrorRate              string // "–" until two samples exist
}

// pageBackend is one row: a back-end and its cell per check.
type pageBackend struct {
	Name   string
	Active int64
	Cells  []pageCell // in the order of pageData.Columns
}

// pageCell is one check's view of one back-end.
type pageCell struct {
	Listener string // the column: a listener, or "listener/service"
	State    string // up, down, pending, draining, disabled; "" when not in the pool
	Check    string // the check's verdict when State is an operator's
	Latency  string
	Title    string // details on hover, the last error among them
}

// pageChange is one row of the recent changes.
type pageChange struct {
	At, AtFull, Backend, Check, State, Reason string
}

// buildPage turns a Status into what the template shows: one column per
// health check, so an https listener shows each Exchange service apart (a
// server whose OWA is down while its EWS is up).
func buildPage(st Status, rates map[string]rate, now time.Time) pageData {
	d := pageData{Generated: now.Format("2006-01-02 15:04:05 MST")}
	for _, l := range st.Listeners {
		d.Listeners = append(d.Listeners, listenerSummary(l, rates[l.Name]))
		d.Columns = append(d.Columns, checkColumns(l)...)
	}
	col := map[string]int{}
	for i, c := range d.Columns {
		col[c] = i
	}
	rows := map[string]*pageBackend{}
	for _, l := range st.Listeners {
		for _, b := range l.Backends {
			row := rows[b.Name]
			if row == nil {
				row = &pageBackend{Name: b.Name, Cells: make([]pageCell, len(d.Columns))}
				rows[b.Name] = row
			}
			row.Active += b.Active
			if len(b.Checks) == 0 {
				row.Cells[col[l.Name]] = backendCell(b, nil, now)
			}
			for _, chk := range b.Checks {
				row.Cells[col[chk.Check]] = backendCell(b, &chk, now)
			}
		}
	}
	for _, row := range rows {
		for i, c := range d.Columns {
			row.Cells[i].Listener = c
		}
		d.Backends = append(d.Backends, *row)
	}
	sort.Slice(d.Backends, func(i, j int) bool { return d.Backends[i].Name < d.Backends[j].Name })
	for _, name := range slices.Sorted(maps.Keys(st.Pending)) {
		p := st.Pending[name]
		d.Pending = append(d.Pending, pagePending{Set: name, Names: strings.Join(p.Names, ", "),
			Since: shortTime(p.Since, now), NextTry: shortTime(p.NextTry, now), LastError: p.LastError, Attempts: p.Attempts})
	}
	for _, c := range st.Changes {
		d.Changes = append(d.Changes, pageChange{
			At: shortTime(c.At, now), AtFull: c.At.Format(time.RFC3339),
			Backend: c.Backend, Check: c.Check, State: c.State, Reason: c.Reason,
		})
	}
	return d
}

func listenerSummary(l ListenerStatus, r rate) pageListener {
	pl := pageListener{
		Name: l.Name, Protocol: l.Protocol, Addrs: strings.Join(l.Addrs, " "),
		Active: l.Active, Sessions: l.Sessions, Refused: l.Refused, NoBackend: l.NoBackend,
		Rate: "–", ErrorRate: "–",
	}
	if r.ok {
		pl.Rate = fmt.Sprintf("%.1f/s", r.sessions)
		pl.ErrorRate = "0 %"
		if r.attempts > 0 {
			pl.ErrorRate = fmt.Sprintf("%.1f %%", 100*r.errors/r.attempts)
		}
	}
	return pl
}

// checkColumns lists a listener's checks in the order its back-ends carry
// them: its own name, or one "listener/service" per service.
func checkColumns(l ListenerStatus) []string {
	var cols []string
	seen := map[string]bool{}
	for _, b := range l.Backends {
		for _, chk := range b.Checks {
			if !seen[chk.Check] {
				seen[chk.Check] = true
				cols = append(cols, chk.Check)
			}
		}
	}
	if len(cols) == 0 {
		cols = []string{l.Name}
	}
	return cols
}

// backendCell describes a back-end as one check sees it: the operator's
// state first, else the check's verdict (nil: not probed yet).
func backendCell(b BackendStatus, chk *CheckStatus, now time.Time) pageCell {
	c := pageCell{State: "pending", Check: "pending"}
	details := []string{"address " + b.Addr}
	if chk != nil {
		c.State, c.Latency, details = checkCell(*chk, now, details)
		c.Check = "check " + c.State
	}
	if b.Admin == "draining" || b.Admin == "disabled" {
		c.State = b.Admin
		details = append(details, "operator: "+b.Admin)
	} else {
		c.Check = ""
	}
	c.Title = strings.Join(details, "\n")
	return c
}

// checkCell gives a check's state word, its latency and the details of
// its last probe.
func checkCell(chk CheckStatus, now time.Time, details []string) (state, latency string, _ []string) {
	if chk.LastProbe.IsZero() {
		return "pending", "", append(details, "not probed yet")
	}
	state = "down"
	if chk.Up {
		state = "up"
	}
	details = append(details,
		fmt.Sprintf("last probe %s (%s ago)", chk.LastProbe.Format("15:04:05"), now.Sub(chk.LastProbe).Round(time.Second)),
		fmt.Sprintf("%s since %s", state, chk.Since.Format("2006-01-02 15:04:05")))
	if chk.LastError != "" {
		details = append(details, "last error: "+chk.LastError)
	}
	return state, formatLatency(chk.LatencyMS), details
}

func formatLatency(ms float64) string {
	if ms < 10 {
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// shortTime writes t as a clock time, with the date when it is not today.
func shortTime(t, now time.Time) string {
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04:05")
	}
	return t.Format("Jan 2 15:04:05")
}

// counters are one listener's cumulative session counts.
type counters struct {
	sessions, refused, noBackend uint64
}

// sample is every listener's counters at one moment.
type sample struct {
	at     time.Time
	counts map[string]counters
}

// rate is one listener's rates between the last two samples.
type rate struct {
	ok       bool    // two comparable samples exist
	sessions float64 // accepted sessions per second
	errors   float64 // refused and no-back-end sessions in the interval
	attempts float64 // accepted and refused connections in the interval
}

// rateSampler samples counters every interval, once started, and keeps
// the last two samples.
type rateSampler struct {
	read    func() map[string]counters
	every   time.Duration
	wake    chan struct{}
	started sync.Once

	mu         sync.Mutex
	prev, last sample
}

func newRateSampler(read func() map[string]counters, every time.Duration) *rateSampler {
	return &rateSampler{read: read, every: every, wake: make(chan struct{})}
}

// start wakes the sampler; calls after the first do nothing.
func (r *rateSampler) start() {
	r.started.Do(func() { close(r.wake) })
}

// run waits for start, then samples until ctx is done.
func (r *rateSampler) run(ctx context.Context) {
	select {
	case <-r.wake:
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		r.record(sample{at: time.Now(), counts: r.read()})
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func (r *rateSampler) record(s sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prev, r.last = r.last, s
}

// rates compares the last two samples. A listener missing from the
// earlier one, or whose counters went back (another server's answer), has
// no rate yet.
func (r *rateSampler) rates() map[string]rate {
	r.mu.Lock()
	prev, last := r.prev, r.last
	r.mu.Unlock()
	out := map[string]rate{}
	secs := last.at.Sub(prev.at).Seconds()
	if prev.at.IsZero() || secs <= 0 {
		return out
	}
	for name, now := range last.counts {
		was, ok := prev.counts[name]
		if !ok || now.sessions < was.sessions || now.refused < was.refused || now.noBackend < was.noBackend {
			continue
		}
		accepted := float64(now.sessions - was.sessions)
		refused := float64(now.refused - was.refused)
		out[name] = rate{
			ok:       true,
			sessions: accepted / secs,
			errors:   refused + float64(now.noBackend-was.noBackend),
			attempts: accepted + refused,
		}
	}
	return out
}
