package gatehouse

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/gatehouse-proxy/gatehouse/admin"
	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/health"
	"github.com/gatehouse-proxy/gatehouse/protocols/https"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// Server is a running gatehouse: its listeners, pools, health monitor and
// admin listener, built from one Config.
type Server struct {
	cfg       *config.Config
	certs     map[string]*certSet // certificate sets in use, by name
	ctx       context.Context     // lives until Close: certificate upkeep
	stop      context.CancelFunc
	log       *slog.Logger
	monitor   *health.Monitor
	listeners []*listener
	admin     *admin.Admin            // nil when admin.listen is off
	adminRaw  net.Listener            // the admin listener's TCP socket (under TLS off loopback)
	inherited map[string]net.Listener // sockets handed over at start, by address
	wg        sync.WaitGroup
	changes   changeLog
	totals    listenerTotals  // the status's counters, kept across reloads
	reload    func() error    // set by SetReloader
	throttle  *proxy.Throttle // failed logins, shared by every frontend
	gates     sync.Map        // listener name → *proxy.Gate, kept across reloads

	reloadMu    sync.Mutex                    // one Reload at a time
	mu          sync.Mutex                    // guards cfg, listeners, retired, backends and adminStates
	adminStates map[string]proxy.AdminState   // operator states by back-end name
	backends    map[backendKey]*proxy.Backend // the running back-ends, by pool check and name
	retired     []*listener                   // listeners a reload replaced, while sessions remain
}

// SetReloader sets what POST /api/reload calls: typically re-reading the
// configuration file and applying it with Reload.
func (s *Server) SetReloader(f func() error) { s.reload = f }

// config returns the configuration in force.
func (s *Server) config() *config.Config {
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
	cfg     *config.Listener
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
func NewServer(cfg *config.Config, log *slog.Logger) (*Server, error) {
	return newServer(cfg, log, nil)
}

// newServer builds a Server, taking inherited sockets (by configured
// address) instead of binding where it can.
func newServer(cfg *config.Config, log *slog.Logger, inherited map[string]net.Listener) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log, certs: map[string]*certSet{}, adminStates: map[string]proxy.AdminState{}, throttle: &proxy.Throttle{}}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.monitor = health.NewMonitor(log, s.onHealthChange)
	s.inherited = inherited
	b := s.newBuilder(cfg, inherited)
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
	s.mu.Lock()
	be := s.backends[backendKey{t.Check, t.Target}]
	s.mu.Unlock()
	if be != nil {
		be.SetHealthy(t.Up)
	}
}

// setBackends makes a built configuration's back-ends the running ones and
// gives each the operator's state for its name: a drain that came in
// while the configuration was being built is not lost.
func (s *Server) setBackends(m map[backendKey]*proxy.Backend) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.backends = m
	for key, be := range m {
		be.SetAdmin(s.adminStates[key.name])
	}
}

// ShutdownGrace returns the shutdown grace of the configuration in force
// (it may have changed since start).
func (s *Server) ShutdownGrace() time.Duration { return s.config().ShutdownGrace }

// UpgradeGrace returns the upgrade grace of the configuration in force.
func (s *Server) UpgradeGrace() time.Duration { return s.config().UpgradeGrace }

// Start serves every listener and the admin listener in the background.
func (s *Server) Start() {
	for _, l := range s.snapshot() {
		s.serve(l)
	}
	if s.admin != nil {
		s.admin.Start()
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
	s.totals.served(l)
	for _, ln := range l.sockets {
		s.wg.Add(1)
		l.server.Go(ln, func(err error) {
			defer s.wg.Done()
			if !errors.Is(err, proxy.ErrServerClosed) {
				s.log.Error("listener stopped", "listener", l.cfg.Name, "err", err)
			}
		})
	}
}

// every returns the current listeners and those a reload replaced whose
// sessions still run.
func (s *Server) every() []*listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(append([]*listener(nil), s.listeners...), s.retired...)
}

// Shutdown stops accepting everywhere, lets live sessions finish until ctx
// is done, then closes what remains.
func (s *Server) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	current := s.every()
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
	for _, l := range s.every() {
		l.close()
	}
	if s.admin != nil {
		s.admin.Close()
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
	if s.admin == nil {
		return ""
	}
	return s.admin.Addr().String()
}
