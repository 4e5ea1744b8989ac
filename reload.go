package gatehouse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/health"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// Reload applies a new configuration without ending a session or refusing
// a connection:
//   - listen addresses that stay keep their sockets (the new listener takes
//     them over; the kernel queues connections meanwhile); new ones are
//     bound, removed ones closed;
//   - a live session belongs to the configuration it started with and runs
//     until its client or back-end ends it or its own idle timeout fires:
//     the reload sends it no goodbye and sets it no deadline;
//   - only sessions of a listener or back-end the new configuration no
//     longer has go away, reload_grace later, each with its protocol's
//     goodbye;
//   - back-ends that stay keep their live state (health, operator
//     drain/disable, session counts) across the reload: they are the same
//     proxy.Backend in both configurations;
//   - unchanged certificate sets keep running, changed ones restart.
//
// Reloads are serialised. If anything fails (a new port already in use, a
// certificate that cannot load), nothing changes and the error says why.
// The admin listener's address is not reloaded.
func (s *Server) Reload(cfg *config.Config) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.snapshot()
	b := s.newBuilder(cfg, socketsByAddr(old))
	next, err := b.build()
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if cfg.Admin.Listen != s.cfg.Admin.Listen {
		s.log.Warn("admin.listen changed: it takes effect at the next restart", "running", s.cfg.Admin.Listen)
	}
	gone := s.goneBackends(b.backends)
	b.commit()
	s.removeStaleChecks(b.checks)
	names := map[string]bool{}
	for _, l := range next {
		names[l.cfg.Name] = true
	}
	var errs []error
	for _, l := range old {
		errs = append(errs, s.retire(l, b.taken, names[l.cfg.Name], cfg.ReloadGrace))
	}
	s.mu.Lock()
	s.cfg, s.listeners = cfg, next
	s.mu.Unlock()
	for _, l := range next {
		s.serve(l)
	}
	s.endGone(gone, cfg.ReloadGrace)
	s.reloadCertificateFiles()
	s.log.Info("configuration reloaded", "listeners", len(next))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reload: applied, but: %w", err)
	}
	return nil
}

// socketsByAddr maps the configured listen addresses of the running
// listeners to their sockets (port 0 binds anew each time: not reused).
func socketsByAddr(ls []*listener) map[string]net.Listener {
	m := map[string]net.Listener{}
	for _, l := range ls {
		for i, addr := range l.cfg.Listen {
			if _, port, _ := net.SplitHostPort(addr); port != "0" {
				m[addr] = l.sockets[i]
			}
		}
	}
	return m
}

// retire stops an old listener accepting: sockets the new configuration
// kept are released to it (never closed), the others close. When the
// listener stays (same name), its live sessions go on untouched until
// they end; when it was removed, they get grace, then their goodbye.
func (s *Server) retire(l *listener, taken map[string]bool, stays bool, grace time.Duration) error {
	var errs []error
	for i, addr := range l.cfg.Listen {
		if err := l.server.Release(l.sockets[i]); err != nil {
			errs = append(errs, fmt.Errorf("listener %s, %s: %w", l.cfg.Name, addr, err))
			s.log.Error("reload: an old listener did not let go of its socket", "listener", l.cfg.Name, "addr", addr, "err", err)
		}
		if !taken[addr] {
			l.sockets[i].Close()
		}
	}
	if l.stop != nil {
		l.stop() // the new listener runs its own certificate check
	}
	s.mu.Lock()
	s.retired = append(s.retired, l)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if !stays {
			s.endRemoved(l, grace)
		}
		s.awaitRetired(l)
	}()
	return errors.Join(errs...)
}

// removedGoodbye bounds how long, once reload_grace is over, the sessions
// of a removed listener have to take their protocol's goodbye before they
// are closed.
const removedGoodbye = 5 * time.Second

// endRemoved lets the sessions of a listener the new configuration no
// longer has run for grace, then tells those still there goodbye in their
// protocol (421, -ERR, * BYE) and closes what remains.
func (s *Server) endRemoved(l *listener, grace time.Duration) {
	ctx, cancel := context.WithTimeout(s.ctx, grace)
	live := l.server.Sessions() > 0
	for live && ctx.Err() == nil {
		select {
		case <-time.After(retiredPoll):
			live = l.server.Sessions() > 0
		case <-ctx.Done():
		}
	}
	cancel()
	if s.ctx.Err() != nil {
		return
	}
	ctx, cancel = context.WithTimeout(s.ctx, removedGoodbye)
	defer cancel()
	l.server.Shutdown(ctx)
}

// retiredPoll is how often a retired listener is asked whether its last
// session has ended.
const retiredPoll = time.Second

// awaitRetired waits until a retired listener has no session left, then
// frees what it holds. Close ends the wait.
func (s *Server) awaitRetired(l *listener) {
	t := time.NewTicker(retiredPoll)
	defer t.Stop()
	for l.server.Sessions() > 0 {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
	}
	l.server.Shutdown(s.ctx) // no session left: returns at once, frees the parker
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range s.retired {
		if r == l {
			s.retired = append(s.retired[:i], s.retired[i+1:]...)
			break
		}
	}
}

// goneBackends returns the running back-ends that the new configuration
// does not keep (removed, or moved to another address).
func (s *Server) goneBackends(next map[backendKey]*proxy.Backend) []*proxy.Backend {
	kept := map[*proxy.Backend]bool{}
	for _, be := range next {
		kept[be] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var gone []*proxy.Backend
	for _, be := range s.backends {
		if !kept[be] {
			gone = append(gone, be)
		}
	}
	return gone
}

// endGone takes back-ends a reload removed out of the old configuration's
// pools at once (sessions still running on it pick no new request there),
// and closes their live sessions after grace.
func (s *Server) endGone(gone []*proxy.Backend, grace time.Duration) {
	if len(gone) == 0 {
		return
	}
	for _, be := range gone {
		be.SetAdmin(proxy.Draining)
	}
	time.AfterFunc(grace, func() {
		for _, be := range gone {
			if n := be.CloseSessions(); n > 0 {
				s.log.Warn("closed sessions of a back-end the configuration no longer has", "backend", be.Name, "addr", be.Addr, "sessions", n)
			}
		}
	})
}

// removeStaleChecks removes health checks that the new configuration no
// longer has.
func (s *Server) removeStaleChecks(keep []health.Check) {
	want := map[[2]string]bool{}
	for _, c := range keep {
		want[[2]string{c.Target, c.Name}] = true
	}
	for _, st := range s.monitor.Snapshot() {
		if !want[[2]string{st.Target, st.Check}] {
			s.monitor.Remove(st.Target, st.Check)
		}
	}
}

// reloadCertificateFiles re-reads the certificate files of running sets.
func (s *Server) reloadCertificateFiles() {
	for name, c := range s.certs {
		if err := c.m.Reload(); err != nil {
			s.log.Error("certificate reload failed; the previous certificates stay", "certificates", name, "err", err)
		}
	}
}
