package admin

import (
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// findAll returns the elements for which match is true, in document order.
func findAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	if n.Type == html.ElementNode && match(n) {
		out = append(out, n)
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		out = append(out, findAll(c, match)...)
	}
	return out
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// textOf returns the text of n and its descendants.
func textOf(n *html.Node) string {
	if n.Type == html.TextNode {
		return n.Data
	}
	var b strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		b.WriteString(textOf(c))
	}
	return b.String()
}

// The page shows each listener's session rate and error share between
// the sampler's last two samples.
func TestStatusPageRates(t *testing.T) {
	srv := &fakeServer{listeners: []ListenerStatus{{Name: "echo", Protocol: "tcp", Sessions: 10, Backends: []BackendStatus{}}}}
	page := newStatusPage(srv, quietLog(), time.Hour)
	t0 := time.Now()
	page.sampler.record(sample{at: t0, counts: listenerCounters(srv)})
	// Four more sessions, one of which found no back-end.
	srv.mu.Lock()
	srv.listeners[0].Sessions, srv.listeners[0].NoBackend = 14, 1
	srv.mu.Unlock()
	page.sampler.record(sample{at: t0.Add(2 * time.Second), counts: listenerCounters(srv)})

	rec := httptest.NewRecorder()
	page.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	doc, err := html.Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	row := findAll(doc, func(n *html.Node) bool { return n.Data == "tr" && attr(n, "data-listener") == "echo" })
	if len(row) != 1 {
		t.Fatal("no row for listener echo")
	}
	// 4 sessions in 2 s; 1 of 4 found no back-end.
	if text := textOf(row[0]); !strings.Contains(text, "2.0/s") || !strings.Contains(text, "25.0 %") {
		t.Errorf("echo's row %q: want 2.0/s and 25.0 %% errors", text)
	}
}

func TestRateSampler(t *testing.T) {
	r := newRateSampler(nil, time.Hour)
	t0 := time.Now()
	if len(r.rates()) != 0 {
		t.Error("rates before any sample")
	}
	r.record(sample{at: t0, counts: map[string]counters{"smtp": {10, 1, 1}, "imap": {50, 0, 0}}})
	if len(r.rates()) != 0 {
		t.Error("rates from a single sample")
	}
	r.record(sample{at: t0.Add(5 * time.Second), counts: map[string]counters{
		"smtp": {20, 1, 3},  // 10 sessions in 5 s, 2 without a back-end
		"imap": {5, 0, 0},   // went back: replaced by a reload
		"pop3": {100, 0, 0}, // new since the last sample
	}})
	got := r.rates()
	if want := (rate{ok: true, sessions: 2, errors: 2, attempts: 10}); got["smtp"] != want {
		t.Errorf("smtp: %+v, want %+v", got["smtp"], want)
	}
	if got["imap"].ok || got["pop3"].ok {
		t.Errorf("rates for counters with no comparable sample: %+v", got)
	}
}

func TestRefreshSeconds(t *testing.T) {
	for q, want := range map[string]int{"": 5, "1": 1, "30": 30, "3600": 3600, "0": 5, "-2": 5, "3601": 5, "2s": 5} {
		if got := refreshSeconds(q); got != want {
			t.Errorf("refresh=%q: %d, want %d", q, got, want)
		}
	}
}

// An https listener shows one column per Exchange service, so a server
// whose OWA is down while its EWS is up reads as exactly that.
func TestStatusPageColumnPerServiceCheck(t *testing.T) {
	now := time.Now()
	probed := now.Add(-time.Second)
	st := Status{Listeners: []ListenerStatus{{
		Name: "https", Protocol: "https",
		Backends: []BackendStatus{{
			Name: "ex1", Addr: "10.0.0.11:443", Admin: "enabled",
			Checks: []CheckStatus{
				{Check: "https/owa", Up: false, LastError: "http: status 503", LastProbe: probed, Since: probed},
				{Check: "https/ews", Up: true, LastProbe: probed, Since: probed},
			},
		}},
	}}}
	d := buildPage(st, nil, now)
	if want := []string{"https/owa", "https/ews"}; !slices.Equal(d.Columns, want) {
		t.Fatalf("columns = %v, want %v", d.Columns, want)
	}
	cells := d.Backends[0].Cells
	if cells[0].State != "down" || cells[1].State != "up" {
		t.Errorf("cells = %+v", cells)
	}
	if !strings.Contains(cells[0].Title, "status 503") {
		t.Errorf("the OWA cell's hover text lacks its error: %q", cells[0].Title)
	}
}
