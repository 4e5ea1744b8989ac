package health

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// A check suspected from outside goes down at once and needs rise passing
// probes to come back, each change reported through the callback.
func TestSuspectTakesDownUntilRisePasses(t *testing.T) {
	var mu sync.Mutex
	var changes []bool
	m := NewMonitor(nil, func(tr Transition) {
		mu.Lock()
		changes = append(changes, tr.Up)
		mu.Unlock()
	})
	defer m.Close()
	m.Add(Check{Target: "b", Name: "smtp", Addr: "x", Interval: 30 * time.Millisecond, Rise: 2,
		Probe: ProbeFunc(func(context.Context, string) error { return nil })})
	time.Sleep(50 * time.Millisecond)
	m.Suspect("b", "smtp", errors.New("3 connects failed"))
	if st, _ := m.Status("b", "smtp"); st.Up {
		t.Fatal("still up right after Suspect")
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if st, _ := m.Status("b", "smtp"); st.Up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("did not come back after passing probes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The callback runs after the state changed: wait for it too.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(changes)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 2 || changes[0] || !changes[1] {
		t.Errorf("changes = %v, want [false true]", changes)
	}
}
