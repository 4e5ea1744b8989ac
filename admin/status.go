package admin

import (
	"errors"
	"time"
)

// Server is what the admin listener needs of a running gatehouse. The
// root package implements it; every method is safe for concurrent use.
type Server interface {
	// Listeners returns a snapshot of every listener with its back-ends,
	// their checks and the listener's counters, which never go back (a
	// reload keeps them).
	Listeners() []ListenerStatus
	// Certificates returns, by listener name, the last comparisons of each
	// back-end's certificate with the edge's (https listeners only).
	Certificates() map[string][]CertCheck
	// Changes returns the most recent state changes, newest first.
	Changes() []Change
	// CertificateSets returns, by set name, the certificate sets still
	// waiting for a certificate (ACME unreachable at start: a temporary
	// one is served meanwhile); sets that hold theirs are left out.
	CertificateSets() map[string]PendingSet
	// SetBackendState applies an operator action to the back-end of that
	// name in every pool and returns how many pools it changed; an unknown
	// name is an error.
	SetBackendState(name string, a Action) (pools int, err error)
	// Reload re-reads the configuration and applies it; ErrNoReload when
	// the server was not started from a file.
	Reload() error
}

// ErrNoReload is what Server.Reload returns when there is nothing to
// reload from.
var ErrNoReload = errors.New("this server was not started from a configuration file")

// Action is an operator's action on a back-end, as the API's paths name it.
type Action string

// The operator actions.
const (
	Drain   Action = "drain"   // no new sessions; live ones finish
	Enable  Action = "enable"  // back in
	Disable Action = "disable" // out, and live sessions close after a grace
)

// State is the back-end state an action leads to: draining, enabled or
// disabled ("" for an unknown action).
func (a Action) State() string {
	switch a {
	case Drain:
		return "draining"
	case Enable:
		return "enabled"
	case Disable:
		return "disabled"
	}
	return ""
}

// Status is what GET /api/status returns: every listener with its
// back-ends, and each back-end's state per health check.
type Status struct {
	Listeners []ListenerStatus `json:"listeners"`
	// Changes are the most recent state changes, newest first.
	Changes []Change `json:"recent_changes"`
	// Pending are the certificate sets waiting for a certificate, by name.
	Pending map[string]PendingSet `json:"pending_certificates,omitempty"`
}

// Snapshot gathers a Status from s: its listeners, each with its
// certificate comparisons, and the recent changes.
func Snapshot(s Server) Status {
	st := Status{Listeners: s.Listeners(), Changes: s.Changes(), Pending: s.CertificateSets()}
	certs := s.Certificates()
	for i := range st.Listeners {
		st.Listeners[i].Certificates = certs[st.Listeners[i].Name]
	}
	return st
}

// PendingSet is a certificate set still waiting for its certificate.
type PendingSet struct {
	Names     []string  `json:"names"`
	Since     time.Time `json:"since"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error"`
	NextTry   time.Time `json:"next_try"`
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
	Certificates []CertCheck `json:"certificates,omitempty"`
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

// CertCheck is one comparison of a back-end's certificate with the
// edge's, as an https listener's watcher made it.
type CertCheck struct {
	// Backend and Addr name the back-end.
	Backend string `json:"backend"`
	Addr    string `json:"addr"`
	// Services lists the services that route to it with TLS terminated.
	Services []string `json:"services"`
	// Match is true when the back-end's leaf certificate is the edge's.
	Match bool `json:"match"`
	// Edge and Presented are SHA-256 fingerprints (hex) of the two leaf
	// certificates; Presented is empty when none was seen.
	Edge      string `json:"edge_sha256"`
	Presented string `json:"backend_sha256,omitempty"`
	// Problem says why Match is false, in words for an operator.
	Problem string `json:"problem,omitempty"`
	// Checked is when the comparison ran.
	Checked time.Time `json:"checked"`
}
