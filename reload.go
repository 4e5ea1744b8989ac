package gatehouse

import (
	"context"
	"fmt"
	"net"

	"github.com/gatehouse-proxy/gatehouse/health"
)

// Reload applies a new configuration without dropping a session or
// refusing a connection:
//   - listen addresses that stay keep their sockets (the new listener takes
//     them over; the kernel queues connections meanwhile); new ones are
//     bound, removed ones closed once their sessions are done;
//   - live sessions finish on the configuration they started with; the old
//     listeners drain for up to shutdown_grace;
//   - health state and operator drain/disable carry over for the
//     (back-end, listener) pairs that stay; checks of pairs that go are
//     removed;
//   - unchanged certificate sets keep running, changed ones restart.
//
// If anything fails (a new port already in use, a certificate that cannot
// load), nothing changes and the error says why. The admin listener's
// address is not reloaded.
func (s *Server) Reload(cfg *Config) error {
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
	b.commit()
	s.removeStaleChecks(b.checks)
	for _, l := range old {
		s.handOver(l, b.taken)
	}
	s.mu.Lock()
	s.cfg, s.listeners = cfg, next
	s.mu.Unlock()
	for _, l := range next {
		s.serve(l)
	}
	s.reloadCertificateFiles()
	s.log.Info("configuration reloaded", "listeners", len(next))
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

// handOver stops an old listener: sockets the new configuration kept are
// released to it, the others close, and live sessions drain in the
// background for up to shutdown_grace.
func (s *Server) handOver(l *listener, taken map[string]bool) {
	for i, addr := range l.cfg.Listen {
		if taken[addr] {
			l.server.Release(l.sockets[i])
		}
	}
	grace := s.cfg.ShutdownGrace
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, grace)
		defer cancel()
		l.server.Shutdown(ctx)
		if l.stop != nil {
			l.stop()
		}
		for i, addr := range l.cfg.Listen {
			if !taken[addr] {
				l.sockets[i].Close()
			}
		}
	}()
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
