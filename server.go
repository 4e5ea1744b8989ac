package gatehouse

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/gatehouse-proxy/gatehouse/health"
	"github.com/gatehouse-proxy/gatehouse/protocols/https"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// Server is a running gatehouse: its listeners, pools, health monitor and
// admin listener, built from one Config.
type Server struct {
	cfg       *Config
	certs     map[string]*certSet // certificate sets in use, by name
	ctx       context.Context     // lives until Close: certificate upkeep
	stop      context.CancelFunc
	log       *slog.Logger
	monitor   *health.Monitor
	listeners []*listener
	admin     *http.Server
	adminLn   net.Listener
	wg        sync.WaitGroup
	changes   changeLog
	reload    func() error    // set by SetReloader
	throttle  *proxy.Throttle // failed logins, shared by every frontend
	gates     sync.Map        // listener name → *proxy.Gate, kept across reloads

	reloadMu    sync.Mutex                  // one Reload at a time
	mu          sync.Mutex                  // guards cfg, listeners and adminStates
	adminStates map[string]proxy.AdminState // operator states by back-end name
}

// SetReloader sets what POST /api/reload calls: typically re-reading the
// configuration file and applying it with Reload.
func (s *Server) SetReloader(f func() error) { s.reload = f }

// config returns the configuration in force.
func (s *Server) config() *Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// snapshot returns the current listeners.
func (s *Server) snapshot() []*listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listeners
}

// listener is one configured listener at run time.
type listener struct {
	cfg     *Listener
	pool    *proxy.Pool   // the main pool (https: the default service's)
	pools   []*proxy.Pool // every pool, each named after its health check
	server  *proxy.Server
	sockets []net.Listener

	watch      func(context.Context)    // https: the edge/back-end certificate check
	certStatus func() []https.CertCheck // https: its last results
	stop       context.CancelFunc       // ends the certificate check
}

// NewServer builds everything the config describes and binds every port,
// so that a port in use is an error here, before anything is served.
// Nothing is accepted until Start.
func NewServer(cfg *Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log, certs: map[string]*certSet{}, adminStates: map[string]proxy.AdminState{}, throttle: &proxy.Throttle{}}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.monitor = health.NewMonitor(log, s.onHealthChange)
	b := s.newBuilder(cfg, nil)
	listeners, err := b.build()
	if err != nil {
		s.Close()
		return nil, err
	}
	s.mu.Lock()
	s.listeners = listeners // before commit starts the checks, whose callback reads it
	s.mu.Unlock()
	b.commit()
	if err := s.bindAdmin(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// onHealthChange applies a health transition to the back-end it concerns.
func (s *Server) onHealthChange(t health.Transition) {
	ch := Change{At: t.At, Backend: t.Target, Check: t.Check, State: "up"}
	if !t.Up {
		ch.State = "down"
		if t.Err != nil {
			ch.Reason = t.Err.Error()
		}
	}
	s.changes.add(ch)
	for _, l := range s.snapshot() {
		for _, p := range l.pools {
			if p.Name != t.Check {
				continue
			}
			for _, b := range p.Backends {
				if b.Name == t.Target {
					b.SetHealthy(t.Up)
				}
			}
		}
	}
}

// Start serves every listener and the admin listener in the background.
func (s *Server) Start() {
	for _, l := range s.snapshot() {
		s.serve(l)
	}
	if s.admin != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.admin.Serve(s.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("admin listener stopped", "err", err)
			}
		}()
	}
	for _, l := range s.snapshot() {
		s.log.Info("listening", "listener", l.cfg.Name, "protocol", l.cfg.Protocol, "addrs", l.addrs(), "backends", l.cfg.Backends)
	}
}

// serve starts accepting on every socket of a listener.
func (s *Server) serve(l *listener) {
	ctx, stop := context.WithCancel(s.ctx)
	l.stop = stop
	l.watchCertificates(ctx)
	for _, ln := range l.sockets {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := l.server.Serve(ln); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
				s.log.Error("listener stopped", "listener", l.cfg.Name, "err", err)
			}
		}()
	}
}

// Shutdown stops accepting everywhere, lets live sessions finish until ctx
// is done, then closes what remains.
func (s *Server) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	current := s.snapshot()
	errs := make([]error, len(current))
	for i, l := range current {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.server.Shutdown(ctx)
		}()
	}
	wg.Wait()
	s.Close()
	return errors.Join(errs...)
}

// Close stops everything at once.
func (s *Server) Close() error {
	for _, l := range s.snapshot() {
		l.close()
	}
	if s.admin != nil {
		s.admin.Close()
	} else if s.adminLn != nil {
		s.adminLn.Close()
	}
	s.monitor.Close()
	s.stop() // ends the drains of listeners a reload replaced
	s.wg.Wait()
	for _, c := range s.certs {
		c.m.Close()
	}
	return nil
}

func (l *listener) close() {
	if l.stop != nil {
		l.stop()
	}
	l.server.Close()
	for _, ln := range l.sockets {
		ln.Close()
	}
}

func (l *listener) addrs() []string {
	out := make([]string, len(l.sockets))
	for i, ln := range l.sockets {
		out[i] = ln.Addr().String()
	}
	return out
}

// Addrs returns the bound addresses of each listener by name (useful when
// the config asks for port 0).
func (s *Server) Addrs() map[string][]string {
	current := s.snapshot()
	m := make(map[string][]string, len(current))
	for _, l := range current {
		m[l.cfg.Name] = l.addrs()
	}
	return m
}

// AdminAddr returns the admin listener's address, or "" when it is off.
func (s *Server) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}
