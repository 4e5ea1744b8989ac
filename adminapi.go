package gatehouse

import (
	"errors"
	"sync"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// backendStatus lists a listener's back-ends, each with its checks: one
// for most listeners, one per service for https.
func (s *Server) backendStatus(l *listener) []BackendStatus {
	out := []BackendStatus{}
	index := map[string]int{}
	for _, p := range l.pools {
		for _, b := range p.Backends {
			i, ok := index[b.Name]
			if !ok {
				i = len(out)
				index[b.Name] = i
				out = append(out, BackendStatus{
					Name: b.Name, Addr: b.Addr, Admin: b.Admin().String(),
					Usable: b.Usable(), Healthy: b.Healthy(),
				})
			}
			out[i].Active += b.Active()
			if hs, ok := s.monitor.Status(b.Name, p.Name); ok {
				out[i].Checks = append(out[i].Checks, CheckStatus{
					Check: hs.Check, Up: hs.Up, LastError: hs.LastErr,
					LatencyMS: float64(hs.LastLatency.Microseconds()) / 1000,
					LastProbe: hs.LastProbe, Since: hs.Since,
				})
			}
		}
	}
	return out
}

// SetBackendState sets an operator state on every pool's back-end of that
// name and returns how many it changed. Disabled back-ends' live sessions
// are closed after the admin disable grace period, unless the back-end is
// enabled again meanwhile.
func (s *Server) SetBackendState(name string, state proxy.AdminState) (int, error) {
	s.mu.Lock()
	s.adminStates[name] = state
	var hit []*proxy.Backend
	for key, be := range s.backends {
		if key.name == name {
			be.SetAdmin(state)
			hit = append(hit, be)
		}
	}
	s.mu.Unlock()
	if len(hit) == 0 {
		return 0, errors.New("no back-end named " + name)
	}
	s.changes.add(Change{At: time.Now(), Backend: name, State: state.String(), Reason: "operator"})
	if state == proxy.Disabled {
		time.AfterFunc(s.config().Admin.DisableGrace, func() { s.closeDisabled(hit) })
	}
	return len(hit), nil
}

// closeDisabled closes the live sessions of back-ends still disabled.
func (s *Server) closeDisabled(bs []*proxy.Backend) {
	for _, b := range bs {
		if b.Admin() == proxy.Disabled {
			if n := b.CloseSessions(); n > 0 {
				s.log.Warn("closed sessions of a disabled back-end", "backend", b.Name, "sessions", n)
			}
		}
	}
}

// maxChanges is how many recent state changes the status keeps.
const maxChanges = 50

// changeLog keeps the most recent state changes.
type changeLog struct {
	mu      sync.Mutex
	changes []Change // oldest first, at most maxChanges
}

func (c *changeLog) add(ch Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.changes) == maxChanges {
		c.changes = append(c.changes[:0], c.changes[1:]...)
	}
	c.changes = append(c.changes, ch)
}

// list returns the changes, newest first.
func (c *changeLog) list() []Change {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Change, len(c.changes))
	for i, ch := range c.changes {
		out[len(out)-1-i] = ch
	}
	return out
}
