package gatehouse

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/upgrade"
)

// Options are what a Server can start with besides its Config.
type Options struct {
	// Inherited are listening sockets handed over by the gatehouse this
	// process replaces (package upgrade), by configured address: listeners
	// of the configuration take them instead of binding; the rest are
	// closed once built. nil means bind everything.
	Inherited map[string]net.Listener
}

// adminSocketKey names the admin listener's socket among handed-over ones.
func adminSocketKey(addr string) string { return "admin " + addr }

// NewServerWith is NewServer on sockets handed over by a gatehouse being
// replaced.
func NewServerWith(cfg *config.Config, log *slog.Logger, opt Options) (*Server, error) {
	s, err := newServer(cfg, log, opt.Inherited)
	for addr, ln := range opt.Inherited {
		if !s.usesInherited(addr) {
			ln.Close()
		}
	}
	return s, err
}

// usesInherited reports whether a built Server serves a handed-over socket.
func (s *Server) usesInherited(addr string) bool {
	if s == nil {
		return false
	}
	if addr == adminSocketKey(s.cfg.Admin.Listen) {
		return s.adminRaw != nil
	}
	for _, l := range s.snapshot() {
		for _, a := range l.cfg.Listen {
			if a == addr {
				return true
			}
		}
	}
	return false
}

// WithSockets calls f with every listening socket and the address the
// configuration names it by, for a new binary to take over (package
// upgrade); no reload closes one while f runs. Port-0 addresses are left
// out: a new process binds its own.
func (s *Server) WithSockets(f func([]upgrade.Socket) error) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return f(s.sockets())
}

func (s *Server) sockets() []upgrade.Socket {
	var out []upgrade.Socket
	for _, l := range s.snapshot() {
		for i, addr := range l.cfg.Listen {
			if _, port, _ := net.SplitHostPort(addr); port != "0" {
				out = append(out, upgrade.Socket{Addr: addr, Listener: l.sockets[i]})
			}
		}
	}
	if s.adminRaw != nil {
		out = append(out, upgrade.Socket{Addr: adminSocketKey(s.cfg.Admin.Listen), Listener: s.adminRaw})
	}
	return out
}

// HandOver stops accepting everywhere once a new process took the sockets
// over: every listener lets go of its sockets and closes its copy (the new
// process holds its own), the admin listener closes, and live sessions go
// on untouched. WaitSessions then waits for them.
func (s *Server) HandOver() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	for _, l := range s.snapshot() {
		s.retire(l, nil, true, 0)
	}
	s.mu.Lock()
	s.listeners = nil
	s.mu.Unlock()
	if s.admin != nil {
		s.admin.Close()
	}
}

// WaitSessions waits until no session is left, or ctx is done, and
// reports how many remain.
func (s *Server) WaitSessions(ctx context.Context) int {
	t := time.NewTicker(retiredPoll)
	defer t.Stop()
	for {
		n := 0
		for _, l := range s.every() {
			n += l.server.Sessions()
		}
		if n == 0 {
			return 0
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return n
		}
	}
}
