package gatehouse

import (
	stdtls "crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/https"
	"github.com/gatehouse-proxy/gatehouse/tls"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Status is what GET /api/status returns: every listener with its
// back-ends, and each back-end's state per health check.
type Status struct {
	Listeners []ListenerStatus `json:"listeners"`
	// Changes are the most recent state changes, newest first.
	Changes []Change `json:"recent_changes"`
}

// Change is one state change of a back-end: a health check going up or
// down, or an operator's drain, enable or disable.
type Change struct {
	At      time.Time `json:"at"`
	Backend string    `json:"backend"`
	Check   string    `json:"check,omitempty"` // empty for operator actions
	State   string    `json:"state"`           // up, down, draining, enabled, disabled
	Reason  string    `json:"reason,omitempty"`
}

// ListenerStatus is one listener's part of Status.
type ListenerStatus struct {
	Name      string          `json:"name"`
	Protocol  string          `json:"protocol"`
	Addrs     []string        `json:"addrs"`
	Active    int             `json:"active_sessions"`
	Sessions  uint64          `json:"sessions_total"`
	Refused   uint64          `json:"refused_total"`    // refused before routing (limits)
	NoBackend uint64          `json:"no_backend_total"` // found no back-end able to serve
	Backends  []BackendStatus `json:"backends"`
	// Certificates (https listeners) compares each back-end's certificate
	// with the edge's: Exchange's Extended Protection needs them equal.
	Certificates []https.CertCheck `json:"certificates,omitempty"`
}

// BackendStatus is one back-end of a listener's pool.
type BackendStatus struct {
	Name    string        `json:"name"`
	Addr    string        `json:"addr"`
	Admin   string        `json:"admin"`  // enabled, draining, disabled
	Usable  bool          `json:"usable"` // takes new sessions now
	Active  int64         `json:"active_sessions"`
	Checks  []CheckStatus `json:"checks"`
	Healthy bool          `json:"healthy"`
}

// CheckStatus is the last verdict of one health check of a back-end.
type CheckStatus struct {
	Check     string    `json:"check"`
	Up        bool      `json:"up"`
	LastError string    `json:"last_error,omitempty"`
	LatencyMS float64   `json:"latency_ms"`
	LastProbe time.Time `json:"last_probe"`
	Since     time.Time `json:"since"`
}

// Status returns a snapshot of every listener and back-end.
func (s *Server) Status() Status {
	var st Status
	for _, l := range s.snapshot() {
		ls := ListenerStatus{Name: l.cfg.Name, Protocol: l.cfg.Protocol, Addrs: l.addrs(), Active: l.server.Active()}
		ls.Sessions, ls.Refused = l.server.Stats()
		ls.NoBackend = l.noBackend()
		ls.Backends = s.backendStatus(l)
		if l.certStatus != nil {
			ls.Certificates = l.certStatus()
		}
		st.Listeners = append(st.Listeners, ls)
	}
	st.Changes = s.changes.list()
	return st
}

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

// noBackend sums the sessions of every pool of the listener that found no
// back-end.
func (l *listener) noBackend() uint64 {
	var n uint64
	for _, p := range l.pools {
		n += p.Failures()
	}
	return n
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

// bindAdmin binds the admin listener unless it is off.
func (s *Server) bindAdmin() error {
	if s.cfg.Admin.Listen == "off" {
		return nil
	}
	ln, ok := s.inherited[adminSocketKey(s.cfg.Admin.Listen)]
	if !ok {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Admin.Listen); err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	s.adminRaw = ln
	if !adminOnLoopback(s.cfg.Admin.Listen) {
		m, err := s.adminCertificates()
		if err != nil {
			ln.Close()
			return fmt.Errorf("admin listener: %w", err)
		}
		ln = stdtls.NewListener(ln, m.ServerConfig("http/1.1"))
	}
	s.adminLn = ln
	s.admin = &http.Server{Handler: s.adminMux(), ReadHeaderTimeout: 10 * time.Second}
	return nil
}

func (s *Server) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.Handle("GET /{$}", s.statusHandler())
	api := http.NewServeMux()
	api.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Status())
	})
	api.HandleFunc("POST /api/backends/{name}/{action}", s.handleBackendAction)
	api.HandleFunc("POST /api/reload", s.handleReload)
	mux.Handle("/api/", s.requireToken(api))
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// adminCertificates returns the manager of the admin listener's
// certificate set, starting it if no listener uses it.
func (s *Server) adminCertificates() (*tls.Manager, error) {
	b := s.newBuilder(s.cfg, nil)
	m, err := b.certificates(certificateSet(s.cfg, s.cfg.Admin.Certificates))
	if err != nil {
		return nil, err
	}
	b.commit()
	return m, nil
}
