package health

import (
	"testing"
	"time"
)

// The verdict counts like HAProxy, except that a check starts up but
// unconfirmed: a back-end dead at start goes down on its first failure.
func TestVerdict(t *testing.T) {
	tests := []struct {
		name    string
		results string // p: pass, f: fail
		want    string // state after each result: U up, D down; lower case when it changed
	}{
		{"dead at start", "ffpp", "dDDu"},
		{"alive at start", "pppp", "UUUU"},
		{"fall 3 once confirmed", "pfffp", "UUUdD"},
		{"a pass breaks the fall streak", "pffpffpff", "UUUUUUUUU"},
		{"rise 2", "fpfpp", "dDDDu"},
		{"a failure breaks the rise streak", "fpfpfpp", "dDDDDDu"},
		{"down and up again", "pfffppfff", "UUUdDuUUd"},
	}
	for _, tt := range tests {
		v := verdict{up: true}
		var got []byte
		for _, r := range tt.results {
			changed := v.observe(r == 'p', 2, 3)
			c := byte('D')
			if v.up {
				c = 'U'
			}
			if changed {
				c += 'a' - 'A'
			}
			got = append(got, c)
		}
		if string(got) != tt.want {
			t.Errorf("%s: %s gives %s, want %s", tt.name, tt.results, got, tt.want)
		}
	}
}

// Replacing a check's settings keeps its state but restarts its streak.
func TestVerdictRestart(t *testing.T) {
	v := verdict{up: true}
	v.observe(false, 2, 3) // down
	v.observe(true, 2, 3)  // one pass of two
	v.restart()
	if v.observe(true, 2, 3) || v.up {
		t.Fatal("the pass before the restart counted toward rise")
	}
	if !v.observe(true, 2, 3) || !v.up {
		t.Fatal("two passes after the restart did not bring the check up")
	}
}

// Jitter stays within 10% either way and does vary.
func TestJitter(t *testing.T) {
	const d = 100 * time.Millisecond
	seen := make(map[time.Duration]bool)
	for range 1000 {
		j := jitter(d)
		if j < 90*time.Millisecond || j > 110*time.Millisecond {
			t.Fatalf("jitter(%v) = %v, outside ±10%%", d, j)
		}
		seen[j] = true
	}
	if len(seen) < 10 {
		t.Errorf("jitter gave only %d distinct values in 1000", len(seen))
	}
}
