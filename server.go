package gatehouse

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/gatehouse-proxy/gatehouse/health"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// Server is a running gatehouse: its listeners, pools, health monitor and
// admin listener, built from one Config.
type Server struct {
	cfg       *Config
	certs     map[string]*tls.Manager // certificate sets in use, by name
	ctx       context.Context         // lives until Close: certificate upkeep
	stop      context.CancelFunc
	log       *slog.Logger
	monitor   *health.Monitor
	listeners []*listener
	admin     *http.Server
	adminLn   net.Listener
	wg        sync.WaitGroup
}

// listener is one configured listener at run time.
type listener struct {
	cfg     *Listener
	pool    *proxy.Pool
	server  *proxy.Server
	sockets []net.Listener
}

// NewServer builds everything the config describes and binds every port,
// so that a port in use is an error here, before anything is served.
// Nothing is accepted until Start.
func NewServer(cfg *Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log, certs: map[string]*tls.Manager{}}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.monitor = health.NewMonitor(log, s.onHealthChange)
	for i := range cfg.Listeners {
		l, err := s.buildListener(&cfg.Listeners[i])
		if err != nil {
			s.Close()
			return nil, err
		}
		s.listeners = append(s.listeners, l)
	}
	if err := s.bindAdmin(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// buildListener makes a listener's pool, frontend and proxy.Server, and
// binds its sockets.
func (s *Server) buildListener(lc *Listener) (*listener, error) {
	pool, err := s.buildPool(lc)
	if err != nil {
		return nil, err
	}
	trusted := make([]netip.Prefix, 0, len(lc.ProxyProtocol.Trusted))
	for _, t := range lc.ProxyProtocol.Trusted {
		p, _ := parsePrefix(t) // validated
		trusted = append(trusted, p)
	}
	l := &listener{cfg: lc, pool: pool}
	handler, err := s.frontend(lc, pool)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
	}
	l.server = &proxy.Server{
		Name:     lc.Name,
		Handler:  handler,
		MaxConns: lc.Limits.MaxConnections,
		MaxPerIP: lc.Limits.MaxPerIP,
		Trusted:  trusted,
		Log:      s.log,
	}
	for _, addr := range lc.Listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		l.sockets = append(l.sockets, ln)
	}
	return l, nil
}

// frontend returns the protocol handler of a listener.
func (s *Server) frontend(lc *Listener, pool *proxy.Pool) (proxy.Handler, error) {
	version, _ := proxy.ProxyVersion(lc.ProxyProtocol.Send) // validated
	edge, err := s.edgeTLS(lc, nil)
	if err != nil {
		return nil, err
	}
	backend, err := lc.BackendTLS.ClientConfig("", s.log)
	if err != nil {
		return nil, err
	}
	return &proxy.TCP{
		Pool:         pool,
		Affinity:     lc.Affinity,
		ProxyVersion: version,
		Idle:         lc.Timeouts.Idle,
		TLS:          edge,
		BackendTLS:   backend,
		Log:          s.log,
	}, nil
}

// edgeTLS returns the TLS config a listener serves clients with, or nil
// when it speaks no TLS. alpn lists the application protocols it offers.
func (s *Server) edgeTLS(lc *Listener, alpn []string) (*stdtls.Config, error) {
	if !lc.TLS.TLS() {
		return nil, nil
	}
	m, err := s.certificates(certificateSet(s.cfg, lc.TLS.Certificates))
	if err != nil {
		return nil, err
	}
	return m.ServerConfig(alpn...), nil
}

// certificates returns the running manager of a certificate set, starting
// it on first use (obtaining or loading its certificates).
func (s *Server) certificates(name string) (*tls.Manager, error) {
	if m, ok := s.certs[name]; ok {
		return m, nil
	}
	m, err := tls.NewManager(s.ctx, s.cfg.Certificates[name], s.log.With("certificates", name))
	if err != nil {
		return nil, fmt.Errorf("certificates %s: %w", name, err)
	}
	s.certs[name] = m
	return m, nil
}

// buildPool makes the listener's back-ends and registers their checks.
func (s *Server) buildPool(lc *Listener) (*proxy.Pool, error) {
	policy, err := proxy.NewPolicy(lc.Balance)
	if err != nil {
		return nil, err
	}
	if lc.Affinity != proxy.AffinityNone {
		policy = &proxy.Rendezvous{Fallback: policy}
	}
	pool := &proxy.Pool{Name: lc.Name, Policy: policy, ConnectTimeout: lc.Timeouts.Connect}
	pool.OnPassiveDown = func(b *proxy.Backend) {
		s.log.Warn("back-end taken out after failed connects", "listener", lc.Name, "backend", b.Name, "addr", b.Addr)
		s.monitor.Suspect(b.Name, lc.Name, errors.New("connects to the back-end failed"))
	}
	for _, name := range lc.Backends {
		bc := s.cfg.Backends[name]
		addr := backendAddr(bc.Address, lc.Port)
		b := proxy.NewBackend(name, addr, bc.Weight)
		pool.Backends = append(pool.Backends, b)
		if err := s.addCheck(lc, b); err != nil {
			return nil, err
		}
	}
	return pool, nil
}

// backendAddr joins a back-end address with the listener's port unless it
// names its own.
func backendAddr(address string, port int) string {
	if _, _, err := net.SplitHostPort(address); err == nil {
		return address
	}
	return net.JoinHostPort(address, strconv.Itoa(port))
}

// addCheck registers the listener's health check of one back-end.
func (s *Server) addCheck(lc *Listener, b *proxy.Backend) error {
	h := lc.Health
	addr := b.Addr
	if h.Port != 0 {
		host, _, _ := net.SplitHostPort(addr)
		addr = net.JoinHostPort(host, strconv.Itoa(h.Port))
	}
	opts := probeOptions(h)
	opts.Dial = probeDialer(lc.ProxyProtocol.Send)
	if err := s.probeTLS(lc, b, &opts); err != nil {
		return fmt.Errorf("listener %s: %w", lc.Name, err)
	}
	probe, err := health.New(h.Probe, opts)
	if err != nil {
		return fmt.Errorf("listener %s: %w", lc.Name, err)
	}
	s.monitor.Add(health.Check{
		Target: b.Name, Name: lc.Name, Addr: addr, Probe: probe,
		Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall,
	})
	return nil
}

// probeOptions maps a health config to the probe's options.
func probeOptions(h *Health) health.Options {
	return health.Options{
		StartTLS:     h.StartTLS,
		HELO:         h.HELO,
		Path:         h.Path,
		Host:         h.Host,
		ExpectStatus: h.ExpectStatus,
		ExpectBody:   h.ExpectBody,
	}
}

// probeTLS makes a health probe speak to the back-end the way the
// listener does: TLS from the first byte or STARTTLS, trusted the same way.
func (s *Server) probeTLS(lc *Listener, b *proxy.Backend, o *health.Options) error {
	host, _, _ := net.SplitHostPort(b.Addr)
	cfg, err := lc.BackendTLS.ClientConfig(host, s.log)
	if err != nil || cfg == nil {
		return err
	}
	o.TLSConfig = cfg
	mail := lc.Health.Probe == "smtp" || lc.Health.Probe == "pop3" || lc.Health.Probe == "imap"
	switch {
	case mail && lc.BackendTLS.Mode == tls.ModeTLS:
		o.ImplicitTLS = true
	case mail && lc.BackendTLS.Mode == tls.ModeStartTLS:
		o.StartTLS = true
	}
	return nil
}

// probeDialer returns, for back-ends that expect a PROXY header, a dialer
// that sends a LOCAL one so the probe is accepted; nil otherwise.
func probeDialer(send string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	version, _ := proxy.ProxyVersion(send)
	if version == 0 {
		return nil
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if err := proxy.WriteProxyHeader(c, version, nil, nil); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// onHealthChange applies a health transition to the back-end it concerns.
func (s *Server) onHealthChange(t health.Transition) {
	for _, l := range s.listeners {
		if l.cfg.Name != t.Check {
			continue
		}
		for _, b := range l.pool.Backends {
			if b.Name == t.Target {
				b.SetHealthy(t.Up)
			}
		}
	}
}

// Start serves every listener and the admin listener in the background.
func (s *Server) Start() {
	for _, l := range s.listeners {
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
	if s.admin != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.admin.Serve(s.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("admin listener stopped", "err", err)
			}
		}()
	}
	for _, l := range s.listeners {
		s.log.Info("listening", "listener", l.cfg.Name, "protocol", l.cfg.Protocol, "addrs", l.addrs(), "backends", l.cfg.Backends)
	}
}

// Shutdown stops accepting everywhere, lets live sessions finish until ctx
// is done, then closes what remains.
func (s *Server) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(s.listeners))
	for i, l := range s.listeners {
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
	for _, l := range s.listeners {
		l.close()
	}
	if s.admin != nil {
		s.admin.Close()
	} else if s.adminLn != nil {
		s.adminLn.Close()
	}
	s.monitor.Close()
	s.wg.Wait()
	for _, m := range s.certs {
		m.Close()
	}
	s.stop()
	return nil
}

func (l *listener) close() {
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
	m := make(map[string][]string, len(s.listeners))
	for _, l := range s.listeners {
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

// grace returns the configured shutdown grace period.
func (s *Server) grace() time.Duration { return s.cfg.ShutdownGrace }
