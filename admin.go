package gatehouse

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Status is what GET /api/status returns: every listener with its
// back-ends, and each back-end's state per health check.
type Status struct {
	Listeners []ListenerStatus `json:"listeners"`
}

// ListenerStatus is one listener's part of Status.
type ListenerStatus struct {
	Name     string          `json:"name"`
	Protocol string          `json:"protocol"`
	Addrs    []string        `json:"addrs"`
	Active   int             `json:"active_sessions"`
	Backends []BackendStatus `json:"backends"`
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
	for _, l := range s.listeners {
		ls := ListenerStatus{Name: l.cfg.Name, Protocol: l.cfg.Protocol, Addrs: l.addrs(), Active: l.server.Active()}
		for _, b := range l.pool.Backends {
			bs := BackendStatus{
				Name: b.Name, Addr: b.Addr, Admin: b.Admin().String(),
				Usable: b.Usable(), Healthy: b.Healthy(), Active: b.Active(),
			}
			if hs, ok := s.monitor.Status(b.Name, l.cfg.Name); ok {
				bs.Checks = append(bs.Checks, CheckStatus{
					Check: hs.Check, Up: hs.Up, LastError: hs.LastErr,
					LatencyMS: float64(hs.LastLatency.Microseconds()) / 1000,
					LastProbe: hs.LastProbe, Since: hs.Since,
				})
			}
			ls.Backends = append(ls.Backends, bs)
		}
		st.Listeners = append(st.Listeners, ls)
	}
	return st
}

// bindAdmin binds the admin listener unless it is off.
func (s *Server) bindAdmin() error {
	if s.cfg.Admin.Listen == "off" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	s.adminLn = ln
	s.admin = &http.Server{Handler: s.adminMux(), ReadHeaderTimeout: 10 * time.Second}
	return nil
}

func (s *Server) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.Status())
	})
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	return mux
}
