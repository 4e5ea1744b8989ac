package gatehouse

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// documentedMetric is one row of the README's metrics table.
type documentedMetric struct {
	labels []string            // label names, in the README's order
	values map[string][]string // label values the README lists, by label
}

// readmeMetrics reads the metrics table of README.md: rows such as
// "| `gatehouse_bytes_total` | pool, backend, direction (`up`, `down`) | … |".
func readmeMetrics(t *testing.T) map[string]documentedMetric {
	t.Helper()
	f, err := os.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]documentedMetric{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "|")
		if len(cols) < 4 || !strings.HasPrefix(strings.TrimSpace(cols[1]), "`gatehouse_") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cols[1]), "`")
		if _, dup := out[name]; dup {
			t.Errorf("README documents %s twice", name)
		}
		out[name] = parseLabels(cols[2])
	}
	if len(out) == 0 {
		t.Fatal("README.md has no metrics table")
	}
	return out
}

var labelSpec = regexp.MustCompile(`^\s*([a-z_]+)\s*(?:\(([^)]*)\))?\s*$`)

// parseLabels parses "listener, reason (`a`, `b`)"; "" or "—" is none.
func parseLabels(col string) documentedMetric {
	m := documentedMetric{values: map[string][]string{}}
	col = strings.TrimSpace(col)
	if col == "" || col == "—" || col == "-" {
		return m
	}
	depth, start := 0, 0
	for i, r := range col + "," {
		switch {
		case r == '(':
			depth++
		case r == ')':
			depth--
		case r == ',' && depth == 0:
			spec := col[start:i]
			start = i + 1
			part := labelSpec.FindStringSubmatch(spec)
			if part == nil {
				m.labels = append(m.labels, "?"+spec) // fails every comparison
				continue
			}
			m.labels = append(m.labels, part[1])
			for v := range strings.SplitSeq(part[2], ",") {
				if v = strings.Trim(strings.TrimSpace(v), "`"); v != "" {
					m.values[part[1]] = append(m.values[part[1]], v)
				}
			}
		}
	}
	return m
}

// scrape fetches /metrics in the text format and parses it strictly.
func scrape(t *testing.T, srv *Server) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+srv.AdminAddr()+"/metrics", nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("/metrics answered %s, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// drained connects to addr and waits for gatehouse to close the session
// (it found no back-end, or refused the client).
func drained(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("session on %s was not closed: %v", addr, err)
	}
}

// eventfulServer runs a gatehouse in which every documented metric has a
// series: sessions relayed, a failover from a dead back-end, a client over
// its per-IP limit, a session with no back-end, and health probes. Its
// listener names are its own: the metrics registry is shared by every
// test in the package.
func eventfulServer(t *testing.T) *Server {
	a := echoServer(t, "a")
	t.Cleanup(func() { a.Close() })
	// dead's health check probes a's port, so dead stays up while
	// sessions fail to connect to it.
	_, aPort, _ := net.SplitHostPort(a.Addr().String())
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
log: {level: error}
backends: {a: {address: %q}, dead: {address: %q}}
listeners:
  - name: exposed
    listen: 127.0.0.1:0
    backends: [dead, a]
    health: {probe: tcp, port: %[3]s, interval: 100ms, timeout: 100ms}
  - name: limited
    listen: 127.0.0.1:0
    backends: [a]
    limits: {max_per_ip: 1}
  - name: stranded
    listen: 127.0.0.1:0
    backends: [dead]
    health: {probe: tcp, port: %[3]s, interval: 100ms, timeout: 100ms}
`, a.Addr(), wiretest.FreeAddr(t), aPort))
	for range 4 { // round-robin puts dead first at least once
		if got := ask(t, srv.Addrs()["exposed"][0], "hi"); got != "a hi" {
			t.Fatalf("session through exposed: %q", got)
		}
	}
	limited := srv.Addrs()["limited"][0]
	held, err := net.DialTimeout("tcp", limited, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	held.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintln(held, "held")
	if _, err := bufio.NewReader(held).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	drained(t, limited) // a second session from 127.0.0.1: over the limit
	drained(t, srv.Addrs()["stranded"][0])
	return srv
}

// engineFamilies are the families eventfulServer causes: the engine's
// and the health monitor's. Protocol frontends' families appear only
// after their own events (an SMTP transaction, an HTTP request); for them
// TestEveryDeclaredMetricIsDocumented checks the README against the code.
var engineFamilies = []string{
	"gatehouse_sessions_active", "gatehouse_sessions_total", "gatehouse_sessions_refused_total",
	"gatehouse_backend_sessions_active", "gatehouse_bytes_total", "gatehouse_backend_dial_failures_total",
	"gatehouse_backend_failovers_total", "gatehouse_no_backend_total",
	"gatehouse_backend_up", "gatehouse_health_probe_duration_seconds", "gatehouse_health_probes_total",
}

func TestMetricsExpositionMatchesReadme(t *testing.T) {
	documented := readmeMetrics(t)
	caused := map[string]documentedMetric{}
	for _, name := range engineFamilies {
		caused[name] = documented[name]
	}
	srv := eventfulServer(t)
	// Probes and session ends are recorded asynchronously.
	fams := scrape(t, srv)
	for deadline := time.Now().Add(5 * time.Second); len(missingFamilies(fams, caused)) > 0; fams = scrape(t, srv) {
		if time.Now().After(deadline) {
			t.Fatalf("documented in README.md but not exported: %v", missingFamilies(fams, caused))
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The registry is the process's: families other tests caused count too.
	for _, name := range slices.Sorted(maps.Keys(fams)) {
		fam := fams[name]
		if !strings.HasPrefix(name, "gatehouse_") {
			continue
		}
		doc, ok := documented[name]
		if !ok {
			t.Errorf("%s is exported but not documented in README.md's metrics table", name)
			continue
		}
		if fam.GetHelp() == "" {
			t.Errorf("%s has no help text", name)
		}
		for _, m := range fam.GetMetric() {
			checkLabels(t, name, m, doc)
		}
	}
	for _, want := range []string{
		`gatehouse_sessions_refused_total{listener="limited",reason="per_ip_limit"}`,
		`gatehouse_backend_failovers_total{backend="a",pool="exposed"}`,
		`gatehouse_no_backend_total{pool="stranded"}`,
	} {
		if v := seriesValue(fams, want); v < 1 {
			t.Errorf("%s = %v, want at least 1", want, v)
		}
	}
}

// Every metric the code declares is in the README's table, and every row
// of the table is a metric the code declares: the README cannot fall
// behind the code, nor keep a metric that is gone.
func TestEveryDeclaredMetricIsDocumented(t *testing.T) {
	documented := readmeMetrics(t)
	declared := declaredMetrics(t)
	for name, file := range declared {
		if _, ok := documented[name]; !ok {
			t.Errorf("%s (declared in %s) is missing from README.md's metrics table", name, file)
		}
	}
	for name := range documented {
		if _, ok := declared[name]; !ok {
			t.Errorf("README.md documents %s, which no code declares", name)
		}
	}
}

// declaredMetrics scans the module's Go sources (tests excluded) for
// metric declarations, `Name: "gatehouse_…"`, and maps each to its file.
func declaredMetrics(t *testing.T) map[string]string {
	t.Helper()
	re := regexp.MustCompile(`Name:\s*"(gatehouse_[a-z0-9_]+)"`)
	out := map[string]string{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "." || d.Name() == "bench") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllSubmatch(src, -1) {
			out[string(m[1])] = path
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 10 {
		t.Fatalf("found only %d metric declarations: the scan is broken", len(out))
	}
	return out
}

// missingFamilies lists the documented families absent from fams.
func missingFamilies(fams map[string]*dto.MetricFamily, documented map[string]documentedMetric) []string {
	var out []string
	for name := range documented {
		if fams[name] == nil {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// checkLabels compares one series' labels with the README's row.
func checkLabels(t *testing.T, name string, m *dto.Metric, doc documentedMetric) {
	t.Helper()
	var got []string
	for _, lp := range m.GetLabel() {
		got = append(got, lp.GetName())
		if vals := doc.values[lp.GetName()]; len(vals) > 0 && !slices.Contains(vals, lp.GetValue()) {
			t.Errorf("%s: label %s=%q is not among the documented values %v", name, lp.GetName(), lp.GetValue(), vals)
		}
	}
	want := slices.Clone(doc.labels)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s has labels %v, README documents %v", name, got, want)
	}
}

// seriesValue returns the value of one series written as
// name{label="value",…} with labels sorted, or -1 if it is absent.
func seriesValue(fams map[string]*dto.MetricFamily, series string) float64 {
	name, _, _ := strings.Cut(series, "{")
	for _, m := range fams[name].GetMetric() {
		var pairs []string
		for _, lp := range m.GetLabel() {
			pairs = append(pairs, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		sort.Strings(pairs)
		if name+"{"+strings.Join(pairs, ",")+"}" == series {
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return -1
}

func TestReadmeLabelsParse(t *testing.T) {
	m := parseLabels(" listener, reason (`per_ip_limit`, `proxy_header`) ")
	if !slices.Equal(m.labels, []string{"listener", "reason"}) ||
		!slices.Equal(m.values["reason"], []string{"per_ip_limit", "proxy_header"}) {
		t.Errorf("parsed %+v", m)
	}
	if m := parseLabels("—"); len(m.labels) != 0 {
		t.Errorf("no labels parsed as %v", m.labels)
	}
}

// dashboardPath is the Grafana dashboard built on the documented metrics.
const dashboardPath = "examples/grafana/gatehouse.json"

var (
	metricName  = regexp.MustCompile(`gatehouse_[a-z0-9_]+`)
	selector    = regexp.MustCompile(`(gatehouse_[a-z0-9_]+)\{([^}]*)\}`)
	matcherName = regexp.MustCompile(`([a-z_]+)\s*(?:=~|!~|!=|=)`)
	grouping    = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	SchemaVersion int     `json:"schemaVersion"`
	UID           string  `json:"uid"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name, Type string
			Query      any
		}
	}
}

type panel struct {
	ID         int
	Type       string
	Title      string
	Datasource struct{ Type, UID string }
	Targets    []struct{ Expr string }
	Panels     []panel // a collapsed row's panels
}

// histogramSeries strips the suffixes a histogram's series add to its name.
func histogramSeries(name string, documented map[string]documentedMetric) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if _, known := documented[base]; known {
				return base
			}
		}
	}
	return name
}

func TestGrafanaDashboardUsesDocumentedMetrics(t *testing.T) {
	documented := readmeMetrics(t)
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.SchemaVersion < 36 || d.UID == "" {
		t.Errorf("schemaVersion %d, uid %q: want a current dashboard with a uid", d.SchemaVersion, d.UID)
	}
	if !slices.ContainsFunc(d.Templating.List, func(v struct {
		Name, Type string
		Query      any
	}) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Error("no Prometheus datasource variable named datasource")
	}

	// Every metric named anywhere (queries, variables) is documented.
	used := map[string]bool{}
	for _, name := range metricName.FindAllString(string(raw), -1) {
		name = histogramSeries(name, documented)
		used[name] = true
		if _, ok := documented[name]; !ok {
			t.Errorf("the dashboard uses %s, which README.md does not document", name)
		}
	}
	for _, want := range []string{
		"gatehouse_sessions_active", "gatehouse_sessions_total", "gatehouse_bytes_total",
		"gatehouse_backend_up", "gatehouse_health_probe_duration_seconds",
		"gatehouse_backend_dial_failures_total", "gatehouse_backend_failovers_total", "gatehouse_no_backend_total",
	} {
		if !used[want] {
			t.Errorf("the dashboard has no panel on %s", want)
		}
	}
	ids := map[int]bool{}
	for _, p := range flatten(d.Panels) {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		checkPanel(t, p, documented)
	}
}

func flatten(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flatten(p.Panels)...)
	}
	return out
}

// checkPanel checks that a panel queries the chosen datasource, and only
// with labels the README documents for the metrics it names.
func checkPanel(t *testing.T, p panel, documented map[string]documentedMetric) {
	t.Helper()
	if p.Type == "row" {
		return
	}
	if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
		t.Errorf("panel %q: datasource %q with %d queries, want ${datasource}", p.Title, p.Datasource.UID, len(p.Targets))
	}
	for _, target := range p.Targets {
		for _, sel := range selector.FindAllStringSubmatch(target.Expr, -1) {
			name := histogramSeries(sel[1], documented)
			for _, m := range matcherName.FindAllStringSubmatch(sel[2], -1) {
				if !hasLabel(documented[name], m[1], sel[1]) {
					t.Errorf("panel %q: %s has no label %s", p.Title, name, m[1])
				}
			}
		}
		for _, g := range grouping.FindAllStringSubmatch(target.Expr, -1) {
			for l := range strings.SplitSeq(g[1], ",") {
				for _, name := range metricName.FindAllString(target.Expr, -1) {
					if l = strings.TrimSpace(l); l != "" && !hasLabel(documented[histogramSeries(name, documented)], l, name) {
						t.Errorf("panel %q groups by %s, which %s lacks", p.Title, l, name)
					}
				}
			}
		}
	}
}

// hasLabel reports whether series (a documented metric m, or one of its
// histogram series) has the label l: le is the bound of _bucket series.
func hasLabel(m documentedMetric, l, series string) bool {
	return slices.Contains(m.labels, l) || (l == "le" && strings.HasSuffix(series, "_bucket"))
}
