package gatehouse

import (
	stdtls "crypto/tls"
	"fmt"
	"net"

	"github.com/gatehouse-proxy/gatehouse/admin"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// The status types are the admin package's; the root package's names for
// them stay.
type (
	// Status is what GET /api/status returns.
	Status = admin.Status
	// ListenerStatus is one listener's part of Status.
	ListenerStatus = admin.ListenerStatus
	// BackendStatus is one back-end of a listener's pool.
	BackendStatus = admin.BackendStatus
	// CheckStatus is the last verdict of one health check of a back-end.
	CheckStatus = admin.CheckStatus
	// Change is one state change of a back-end.
	Change = admin.Change
)

// Status returns a snapshot of every listener and back-end.
func (s *Server) Status() Status { return admin.Snapshot(adminView{s}) }

// adminView is the running Server as the admin listener sees it: it
// implements admin.Server.
type adminView struct{ s *Server }

var _ admin.Server = adminView{}

// Listeners lists every listener with its back-ends and the counters
// that span reloads.
func (v adminView) Listeners() []admin.ListenerStatus {
	s := v.s
	current := s.snapshot()
	out := make([]admin.ListenerStatus, 0, len(current))
	for _, l := range current {
		c := s.totals.counts(l)
		out = append(out, admin.ListenerStatus{
			Name: l.cfg.Name, Protocol: l.cfg.Protocol, Addrs: l.addrs(),
			Active: c.active, Sessions: c.sessions, Refused: c.refused, NoBackend: c.noBackend,
			Backends: s.backendStatus(l),
		})
	}
	return out
}

// Certificates returns the https listeners' certificate comparisons.
func (v adminView) Certificates() map[string][]admin.CertCheck {
	m := map[string][]admin.CertCheck{}
	for _, l := range v.s.snapshot() {
		if l.certStatus == nil {
			continue
		}
		for _, c := range l.certStatus() {
			m[l.cfg.Name] = append(m[l.cfg.Name], admin.CertCheck(c))
		}
	}
	return m
}

// CertificateSets returns the certificate sets still waiting for theirs.
func (v adminView) CertificateSets() map[string]admin.PendingSet {
	m := map[string]admin.PendingSet{}
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	for name, c := range v.s.certs {
		if st := c.m.Status(); st.Pending {
			m[name] = admin.PendingSet{Names: st.Names, Since: st.Since, Attempts: st.Attempts, LastError: st.LastError, NextTry: st.NextTry}
		}
	}
	return m
}

// Changes returns the recent state changes, newest first.
func (v adminView) Changes() []admin.Change { return v.s.changes.list() }

// adminActions maps the API's actions to operator states.
var adminActions = map[admin.Action]proxy.AdminState{
	admin.Drain:   proxy.Draining,
	admin.Enable:  proxy.Enabled,
	admin.Disable: proxy.Disabled,
}

// SetBackendState applies an operator action through SetBackendState.
func (v adminView) SetBackendState(name string, a admin.Action) (int, error) {
	state, ok := adminActions[a]
	if !ok {
		return 0, fmt.Errorf("unknown action %q", a)
	}
	return v.s.SetBackendState(name, state)
}

// Reload calls the reloader SetReloader set.
func (v adminView) Reload() error {
	if v.s.reload == nil {
		return admin.ErrNoReload
	}
	return v.s.reload()
}

// bindAdmin binds the admin listener unless it is off: plain HTTP on
// loopback, HTTPS elsewhere.
func (s *Server) bindAdmin() error {
	cfg := s.cfg.Admin
	if cfg.Listen == "off" {
		return nil
	}
	ln, ok := s.inherited[adminSocketKey(cfg.Listen)]
	if !ok {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
	}
	s.adminRaw = ln
	if !cfg.OnLoopback() {
		m, err := s.adminCertificates()
		if err != nil {
			ln.Close()
			return fmt.Errorf("admin listener: %w", err)
		}
		ln = stdtls.NewListener(ln, m.ServerConfig("http/1.1"))
	}
	s.admin = admin.New(ln, admin.Options{Token: cfg.Token, Names: cfg.Names, Pprof: cfg.Pprof, Log: s.log}, adminView{s})
	return nil
}

// adminCertificates returns the manager of the admin listener's
// certificate set, starting it if no listener uses it.
func (s *Server) adminCertificates() (*tls.Manager, error) {
	b := s.newBuilder(s.cfg, nil)
	m, err := b.certificates(s.cfg.CertificateSet(s.cfg.Admin.Certificates))
	if err != nil {
		return nil, err
	}
	b.commit()
	return m, nil
}
