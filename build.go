package gatehouse

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strconv"

	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/health"
	"github.com/gatehouse-proxy/gatehouse/protocols/imap"
	"github.com/gatehouse-proxy/gatehouse/protocols/pop3"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// certSet is a running certificate manager and the config it runs.
type certSet struct {
	cfg tls.Certificates
	m   *tls.Manager
}

// builder turns a Config into listeners, for the first start and for each
// reload. It binds what it must and collects health checks, but changes
// nothing the running Server uses until commit; abort undoes its work.
type builder struct {
	s      *Server
	cfg    *config.Config
	reuse  map[string]net.Listener // sockets of the running config, by listen address
	taken  map[string]bool         // which of them the new config keeps
	bound  []net.Listener          // sockets bound anew
	checks []health.Check
	certs  map[string]*certSet // certificate sets started anew

	// backends are the new configuration's back-ends by (check, name):
	// the handle through which health results reach them. A back-end
	// whose check, name and address stay is the running *proxy.Backend,
	// so its live state and sessions span the reload.
	backends map[backendKey]*proxy.Backend
	weights  map[*proxy.Backend]int // weights of kept back-ends, set at commit
	built    bool                   // build ran: commit swaps the back-ends
}

// backendKey names a back-end within one pool: the pool's health check and
// the back-end's name.
type backendKey struct{ check, name string }

func (s *Server) newBuilder(cfg *config.Config, reuse map[string]net.Listener) *builder {
	return &builder{s: s, cfg: cfg, reuse: reuse, taken: map[string]bool{}, certs: map[string]*certSet{},
		backends: map[backendKey]*proxy.Backend{}, weights: map[*proxy.Backend]int{}}
}

// build makes every listener of the config.
func (b *builder) build() ([]*listener, error) {
	b.built = true
	var out []*listener
	for i := range b.cfg.Listeners {
		l, err := b.listener(&b.cfg.Listeners[i])
		if err != nil {
			b.abort()
			return nil, err
		}
		out = append(out, l)
	}
	if len(b.cfg.HTTP.Listen) > 0 {
		l, err := b.redirectListener()
		if err != nil {
			b.abort()
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// commit hands the built state to the Server: certificate sets, back-ends
// and health checks. The caller swaps the listeners.
func (b *builder) commit() {
	b.s.mu.Lock() // the status reads the running sets
	for name, c := range b.certs {
		if old, ok := b.s.certs[name]; ok {
			old.m.Close()
		}
		b.s.certs[name] = c
	}
	b.s.mu.Unlock()
	for be, w := range b.weights {
		be.SetWeight(w)
	}
	if b.built {
		b.s.setBackends(b.backends)
	}
	for _, c := range b.checks {
		b.s.monitor.Add(c)
	}
	b.s.throttle.SetRealms(proxy.Realms{Domains: b.cfg.Throttle.Realms, Default: b.cfg.Throttle.DefaultRealm})
}

// gate returns the connection counts of the listener name, one Gate per
// name for the Server's life: the sessions of an older configuration
// count against the limits of a reloaded one, so a reload resets no limit.
func (s *Server) gate(name string) *proxy.Gate {
	g, _ := s.gates.LoadOrStore(name, proxy.NewGate())
	return g.(*proxy.Gate)
}

// abort closes what build opened.
func (b *builder) abort() {
	for _, ln := range b.bound {
		ln.Close()
	}
	for _, c := range b.certs {
		c.m.Close()
	}
}

// listener makes a listener's pool, frontend and proxy.Server, and its
// sockets: kept from the running config where the address stays.
func (b *builder) listener(lc *config.Listener) (*listener, error) {
	l := &listener{cfg: lc}
	var handler proxy.Handler
	var err error
	if lc.Protocol == "https" {
		handler, err = b.httpsFrontend(lc, l)
	} else {
		l.pool, err = b.listenerPool(lc)
		if err == nil {
			l.pools = []*proxy.Pool{l.pool}
			handler, err = b.frontend(lc, l.pool)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
	}
	trusted := config.Prefixes(lc.ProxyProtocol.Trusted)
	l.server = &proxy.Server{
		Name:     lc.Name,
		Handler:  handler,
		MaxConns: lc.Limits.MaxConnections,
		MaxPerIP: lc.Limits.MaxPerIP,
		Gate:     b.s.gate(lc.Name),
		Trusted:  trusted,
		Log:      b.s.log,
	}
	for _, addr := range lc.Listen {
		ln, err := b.socket(addr)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		l.sockets = append(l.sockets, ln)
	}
	return l, nil
}

// socket returns the running socket for addr, or binds a new one. Port 0
// always binds anew.
func (b *builder) socket(addr string) (net.Listener, error) {
	if ln, ok := b.reuse[addr]; ok && !b.taken[addr] {
		b.taken[addr] = true
		return ln, nil
	}
	ln, err := clientListenConfig.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	b.bound = append(b.bound, ln)
	return ln, nil
}

// quietLog discards: for building what was already reported once.
var quietLog = slog.New(slog.DiscardHandler)

// clientListenConfig leaves TCP keep-alive off on client connections (as
// HAProxy and nginx do): the idle timeout ends dead sessions, and each
// keep-alive option costs a system call per connection.
var clientListenConfig = net.ListenConfig{KeepAlive: -1}

// frontend returns the protocol handler of a listener.
func (b *builder) frontend(lc *config.Listener, pool *proxy.Pool) (proxy.Handler, error) {
	link, err := b.link(lc, nil)
	if err != nil {
		return nil, err
	}
	switch lc.Protocol {
	case "pop3", "imap":
		return b.mailLogin(lc, pool, link)
	case "smtp":
		return &smtp.Frontend{Link: link, Pool: pool, Affinity: lc.Affinity, Config: lc.SMTP,
			Suspect: func(be *proxy.Backend, why error) { b.s.monitor.Suspect(be.Name, pool.Name, why) },
		}, nil
	}
	return &proxy.TCP{Link: link, Pool: pool, Affinity: lc.Affinity}, nil
}

// link builds what every frontend of the listener shares: TLS both ways
// (alpn: the protocols offered to clients), the PROXY version, the idle
// limit, the process's throttle and its logger.
func (b *builder) link(lc *config.Listener, alpn []string) (proxy.Link, error) {
	version := byte(lc.ProxyProtocol.Send)
	edge, err := b.edgeTLS(lc, alpn)
	if err != nil {
		return proxy.Link{}, err
	}
	backend, err := lc.BackendTLS.ClientConfig("", b.s.log)
	if err != nil {
		return proxy.Link{}, err
	}
	return proxy.Link{
		EdgeTLS: edge, TLSMode: proxy.ParseTLSMode(lc.TLS.Mode), TLSRequired: lc.TLS.Required,
		BackendTLS: backend, BackendTLSMode: proxy.ParseTLSMode(lc.BackendTLS.Mode),
		ProxyVersion: version, Idle: lc.Timeouts.Idle, Throttle: b.s.throttle, Log: b.s.log,
	}, nil
}

// mailLogin builds the POP3 or IMAP frontend: login at the edge, route by
// user, splice.
func (b *builder) mailLogin(lc *config.Listener, pool *proxy.Pool, link proxy.Link) (proxy.Handler, error) {
	router, err := proxy.NewRouter(lc.Route, pool, link.Log)
	if err != nil {
		return nil, err
	}
	if lc.Protocol == "pop3" {
		return &pop3.Frontend{Link: link, Pool: pool, Router: router, Config: lc.POP3}, nil
	}
	return &imap.Frontend{Link: link, Pool: pool, Router: router, Config: lc.IMAP}, nil
}

// edgeTLS returns the TLS config a listener serves clients with, or nil
// when it speaks no TLS. alpn lists the application protocols it offers.
func (b *builder) edgeTLS(lc *config.Listener, alpn []string) (*stdtls.Config, error) {
	if !lc.TLS.TLS() {
		return nil, nil
	}
	m, err := b.certificates(b.cfg.CertificateSet(lc.TLS.Certificates))
	if err != nil {
		return nil, err
	}
	return m.ServerConfig(alpn...), nil
}

// certificates returns the manager of a certificate set: the running one
// when its config is unchanged, else a new one.
func (b *builder) certificates(name string) (*tls.Manager, error) {
	want := b.cfg.Certificates[name]
	if c, ok := b.certs[name]; ok {
		return c.m, nil
	}
	if c, ok := b.s.certs[name]; ok && reflect.DeepEqual(c.cfg, want) {
		return c.m, nil
	}
	m, err := tls.NewManager(b.s.ctx, want, b.s.log.With("cert_set", name))
	if err != nil {
		return nil, fmt.Errorf("certificates %s: %w", name, err)
	}
	b.certs[name] = &certSet{cfg: want, m: m}
	return m, nil
}

// poolSpec says what one pool holds and how its back-ends are checked.
type poolSpec struct {
	check    string   // the health check's name: the listener's, or "listener/service"
	backends []string // back-end names
	balance  string
	keyed    bool                                          // sessions carry an affinity key
	probe    func(be *proxy.Backend) (health.Check, error) // the check of one back-end
}

// pool makes a pool's back-ends and their checks. Back-ends start in the
// state the running config knew them in: health of a check that stays,
// and the operator's drain or disable.
func (b *builder) pool(lc *config.Listener, spec poolSpec) (*proxy.Pool, error) {
	policy, err := proxy.NewPolicy(spec.balance)
	if err != nil {
		return nil, err
	}
	if spec.keyed {
		policy = &proxy.Rendezvous{Fallback: policy}
	}
	s := b.s
	pool := &proxy.Pool{Name: spec.check, Policy: policy, ConnectTimeout: lc.Timeouts.Connect}
	pool.OnPassiveDown = func(be *proxy.Backend) {
		s.log.Warn("back-end taken out after failed connects", "pool", spec.check, "backend", be.Name, "addr", be.Addr)
		s.monitor.Suspect(be.Name, spec.check, errors.New("connects to the back-end failed"))
	}
	for _, name := range spec.backends {
		be := b.backend(backendKey{spec.check, name}, BackendAddr(b.cfg.Backends[name].Address, lc.Port))
		pool.Backends = append(pool.Backends, be)
		c, err := spec.probe(be)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		c.Target, c.Name = be.Name, spec.check
		b.checks = append(b.checks, c)
	}
	return pool, nil
}

// backend returns the back-end of a pool: the running one when its check,
// name and address stay (its weight set at commit), else a new one in the
// state the running configuration knew: health of a check that stays, and
// the operator's drain or disable.
func (b *builder) backend(key backendKey, addr string) *proxy.Backend {
	weight := b.cfg.Backends[key.name].Weight
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if be := s.backends[key]; be != nil && be.Addr == addr {
		b.backends[key], b.weights[be] = be, weight
		return be
	}
	be := proxy.NewBackend(key.name, addr, weight)
	if st, ok := s.monitor.Status(key.name, key.check); ok {
		be.SetHealthy(st.Up)
	}
	be.SetAdmin(s.adminStates[key.name])
	b.backends[key] = be
	return be
}

// listenerPool is the one pool of a listener of any protocol but https,
// checked by the listener's health settings.
func (b *builder) listenerPool(lc *config.Listener) (*proxy.Pool, error) {
	return b.pool(lc, poolSpec{
		check: lc.Name, backends: lc.Backends, balance: lc.Balance,
		keyed: lc.Affinity != proxy.AffinityNone,
		probe: func(be *proxy.Backend) (health.Check, error) { return b.check(lc, be) },
	})
}

// BackendAddr joins a back-end address with the listener's port unless it
// names its own: the address gatehouse dials.
func BackendAddr(address string, port int) string {
	if _, _, err := net.SplitHostPort(address); err == nil {
		return address
	}
	return net.JoinHostPort(address, strconv.Itoa(port))
}

// check builds the listener's health check of one back-end.
func (b *builder) check(lc *config.Listener, be *proxy.Backend) (health.Check, error) {
	h := lc.Health
	if h == nil { // a Config built in code without config.Parse's defaults
		return health.Check{}, errors.New("no health settings: build the Config with config.Parse, or set Health")
	}
	addr := be.Addr
	if h.Port != 0 {
		host, _, _ := net.SplitHostPort(addr)
		addr = net.JoinHostPort(host, strconv.Itoa(h.Port))
	}
	opts := h.Options()
	opts.Dial = probeDialer(byte(lc.ProxyProtocol.Send))
	if err := b.probeTLS(lc, be, &opts); err != nil {
		return health.Check{}, err
	}
	probe, err := health.New(h.Probe, opts)
	if err != nil {
		return health.Check{}, err
	}
	return health.Check{
		Addr: addr, Probe: probe,
		Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall,
	}, nil
}

// probeTLS makes a health probe speak to the back-end the way the
// listener does: TLS from the first byte or STARTTLS, trusted the same way.
func (b *builder) probeTLS(lc *config.Listener, be *proxy.Backend, o *health.Options) error {
	host, _, _ := net.SplitHostPort(be.Addr)
	// The frontend's own config already warned about insecure_skip_verify.
	cfg, err := lc.BackendTLS.ClientConfig(host, quietLog)
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
func probeDialer(version byte) func(ctx context.Context, network, addr string) (net.Conn, error) {
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
