//go:build linux

package proxy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// keys returns n distinct routing keys shaped like client addresses.
func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
	}
	return out
}

// hashPool returns a pool of rendezvous-hashed back-ends b0…b(n-1); port
// varies the addresses, which must not matter to hashing.
func hashPool(n, port int) *Pool {
	p := &Pool{Name: "hash", Policy: &Rendezvous{}}
	for i := range n {
		p.Backends = append(p.Backends, NewBackend(fmt.Sprintf("b%d", i), fmt.Sprintf("127.0.0.1:%d", port+i), 1))
	}
	return p
}

// owners maps each key to the name of the back-end it is routed to first.
func owners(p *Pool, ks []string) map[string]string {
	out := make(map[string]string, len(ks))
	for _, k := range ks {
		out[k] = p.Pick(k)[0].Name
	}
	return out
}

// Two gatehouse processes with the same config share no state, yet route
// every key the same way, failover order included.
func TestRendezvousAgreesAcrossPools(t *testing.T) {
	one, two := hashPool(5, 2500), hashPool(5, 9900)
	one.Backends[2].Weight, two.Backends[2].Weight = 3, 3
	for _, k := range keys(10000) {
		a, b := names(one.Pick(k)), names(two.Pick(k))
		if !slices.Equal(a, b) {
			t.Fatalf("key %s: one pool orders %v, the other %v", k, a, b)
		}
	}
}

// A back-end leaving a pool of five moves only the keys it held, about a
// fifth of them, and each of the others keeps its keys.
func TestRendezvousRemovalMovesOnlyItsKeys(t *testing.T) {
	p := hashPool(5, 2500)
	ks := keys(10000)
	before := owners(p, ks)
	gone := p.Backends[3]
	gone.SetHealthy(false)
	after := owners(p, ks)

	moved := 0
	for _, k := range ks {
		switch {
		case before[k] == gone.Name && after[k] == gone.Name:
			t.Fatalf("key %s still routed to the removed %s", k, gone.Name)
		case before[k] != after[k] && before[k] != gone.Name:
			t.Fatalf("key %s moved from %s to %s, though %s is still there", k, before[k], after[k], before[k])
		case before[k] != after[k]:
			moved++
		}
	}
	f := float64(moved) / float64(len(ks))
	t.Logf("%.3f of the keys moved", f)
	if f < 0.15 || f > 0.25 {
		t.Errorf("%.3f of the keys moved, want 0.20±0.05", f)
	}

	gone.SetHealthy(true)
	for _, k := range ks {
		if got := p.Pick(k)[0].Name; got != before[k] {
			t.Fatalf("key %s went to %s after %s came back, want %s again", k, got, gone.Name, before[k])
		}
	}
}

// A weight-2 back-end wins about twice the keys of a weight-1 one.
func TestRendezvousWeight(t *testing.T) {
	p := hashPool(3, 2500)
	p.Backends[1].Weight = 2
	count := map[string]int{}
	for _, owner := range owners(p, keys(20000)) {
		count[owner]++
	}
	light := float64(count["b0"]+count["b2"]) / 2
	r := float64(count["b1"]) / light
	t.Logf("shares %v, ratio %.3f", count, r)
	if r < 1.8 || r > 2.2 {
		t.Errorf("shares %v: the weight-2 back-end got %.2f times a weight-1 share, want 2±10%%", count, r)
	}
}

// With no key (no affinity) the default policy balances instead of hashing.
func TestDefaultPolicyBalancesEmptyKey(t *testing.T) {
	p := &Pool{Name: "default", Backends: []*Backend{NewBackend("a", "", 1), NewBackend("b", "", 1)}}
	var got []string
	for range 4 {
		got = append(got, p.Pick("")[0].Name)
	}
	if strings.Join(got, "") != "abab" && strings.Join(got, "") != "baba" {
		t.Errorf("empty key picked %v, want alternation", got)
	}
	k := keys(1)[0]
	first := p.Pick(k)[0].Name
	for range 10 {
		if got := p.Pick(k)[0].Name; got != first {
			t.Fatalf("key %s picked %s then %s; a key must stick", k, first, got)
		}
	}
}

// Weights 1 and 2 split 300 sessions 100:200, interleaved the smooth way:
// the heavy back-end never gets three in a row.
func TestWeightedRoundRobinSmooth(t *testing.T) {
	policy, err := NewPolicy(RoundRobin)
	if err != nil {
		t.Fatal(err)
	}
	light, heavy := NewBackend("light", "", 1), NewBackend("heavy", "", 2)
	p := &Pool{Name: "wrr", Backends: []*Backend{light, heavy}, Policy: policy}
	count, run := map[string]int{}, 0
	for i := range 300 {
		order := p.Pick("")
		if len(order) != 2 || order[0] == order[1] {
			t.Fatalf("pick %d: order %v, want both back-ends", i, names(order))
		}
		count[order[0].Name]++
		if run++; order[0] != heavy {
			run = 0
		}
		if run == 3 {
			t.Fatalf("pick %d: heavy back-end picked three times in a row", i)
		}
	}
	if count["light"] != 100 || count["heavy"] != 200 {
		t.Errorf("split %v, want light 100 and heavy 200", count)
	}
}

// Least connections sends the next session to the back-end with the
// fewest live sessions per unit of weight.
func TestLeastConnPrefersFewerActive(t *testing.T) {
	policy, err := NewPolicy(LeastConn)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := NewBackend("a", "", 1), NewBackend("b", "", 1), NewBackend("c", "", 4)
	p := &Pool{Name: "lc", Backends: []*Backend{a, b, c}, Policy: policy}
	track := func(be *Backend, n int) (release func()) {
		var rs []func()
		for range n {
			rs = append(rs, be.Track(nopCloser{}))
		}
		return func() {
			for _, r := range rs {
				r()
			}
		}
	}
	releaseA := track(a, 2)
	track(b, 1)
	track(c, 3) // 3 sessions at weight 4: 0.75 each, fewer than b's 1
	if got := strings.Join(names(p.Pick("")), ","); got != "c,b,a" {
		t.Errorf("order %s, want c,b,a", got)
	}
	releaseA()
	if a.Active() != 0 {
		t.Fatalf("a has %d active after release, want 0", a.Active())
	}
	if got := strings.Join(names(p.Pick("")), ","); got != "a,c,b" {
		t.Errorf("after a's sessions ended: order %s, want a,c,b", got)
	}
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

func TestNewPolicyRefusesUnknownName(t *testing.T) {
	if _, err := NewPolicy("random"); err == nil || !strings.Contains(err.Error(), "random") {
		t.Errorf("NewPolicy(random) = %v, want an error naming it", err)
	}
}

// Back-ends an operator or health took out are not offered at all.
func TestPickSkipsUnusable(t *testing.T) {
	a, b, c, d := NewBackend("a", "", 1), NewBackend("b", "", 1), NewBackend("c", "", 1), NewBackend("d", "", 1)
	p := &Pool{Name: "skip", Backends: []*Backend{a, b, c, d}, Policy: fixedOrder{}}
	b.SetAdmin(Draining)
	c.SetAdmin(Disabled)
	d.SetHealthy(false)
	if got := strings.Join(names(p.Pick("k")), ","); got != "a" {
		t.Errorf("Pick = %s, want only a", got)
	}
	a.SetHealthy(false)
	if got := p.Pick("k"); got != nil {
		t.Errorf("Pick = %v with nothing usable, want nil", names(got))
	}
}
