package gatehouse

import (
	"context"
	"fmt"
	"net/http"

	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/health"
	"github.com/gatehouse-proxy/gatehouse/protocols/https"
	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// httpsFrontend builds an https listener: one pool per Exchange service,
// each with its own back-end values and its own check named
// "listener/service" (a server whose OWA is down still serves EWS), and
// the frontend over them.
func (b *builder) httpsFrontend(lc *config.Listener, l *listener) (proxy.Handler, error) {
	services := map[string]*proxy.Pool{}
	for _, name := range https.Services() {
		pool, err := b.servicePool(lc, name)
		if err != nil {
			return nil, err
		}
		services[name] = pool
		l.pools = append(l.pools, pool)
	}
	l.pool = services[https.Default]
	link, err := b.link(lc, []string{"http/1.1"})
	if err != nil {
		return nil, err
	}
	f := &https.Frontend{Link: link, Name: lc.Name, Pool: l.pool, Services: services, Config: lc.HTTPS}
	if link.EdgeTLS != nil {
		l.watch = f.WatchCertificates
		l.certStatus = f.CertificateStatus
	}
	return f, nil
}

// servicePool is one service's pool with its health check.
func (b *builder) servicePool(lc *config.Listener, service string) (*proxy.Pool, error) {
	svc := lc.HTTPS.Services[service]
	backends, balance := svc.Backends, svc.Balance
	if len(backends) == 0 {
		backends = lc.Backends
	}
	if balance == "" {
		balance = lc.Balance
	}
	return b.pool(lc, poolSpec{
		check: lc.Name + "/" + service, backends: backends, balance: balance,
		probe: func(be *proxy.Backend) (health.Check, error) { return b.serviceCheck(lc, service, be) },
	})
}

// serviceCheck probes one service of one back-end at its
// healthcheck.htm (Exchange's managed availability) or the configured
// path, over TLS when the back-ends speak it.
func (b *builder) serviceCheck(lc *config.Listener, service string, be *proxy.Backend) (health.Check, error) {
	path, status, body := lc.HTTPS.HealthCheck(service)
	kind := "http"
	opts := health.Options{Path: path, ExpectStatus: status, ExpectBody: body, Dial: probeDialer(byte(lc.ProxyProtocol.Send))}
	if lc.BackendTLS.Mode == tls.ModeTLS {
		kind = "https"
		if err := b.probeTLS(lc, be, &opts); err != nil {
			return health.Check{}, err
		}
	}
	probe, err := health.New(kind, opts)
	if err != nil {
		return health.Check{}, err
	}
	h := lc.Health
	return health.Check{
		Addr: be.Addr, Probe: probe,
		Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall,
	}, nil
}

// redirectListener is the port-80 companion (the config's http:): it
// answers ACME HTTP-01 challenges for its certificate set and redirects
// every other request to the same URL over https.
func (b *builder) redirectListener() (*listener, error) {
	lc := &config.Listener{Name: "http", Protocol: "https", Listen: b.cfg.HTTP.Listen, Timeouts: config.Timeouts{Idle: config.DefaultIdle}}
	lc.HTTPS.RedirectHTTPS = true
	lc.HTTPS.HTTPSPort = b.cfg.HTTP.HTTPSPort
	m, err := b.certificates(b.cfg.CertificateSet(b.cfg.HTTP.Certificates))
	if err != nil {
		return nil, err
	}
	pool := &proxy.Pool{Name: "http"} // no back-end: it only redirects
	l := &listener{cfg: lc, pool: pool, pools: []*proxy.Pool{pool}}
	l.server = &proxy.Server{Name: "http", Log: b.s.log, Handler: &https.Frontend{
		Link: proxy.Link{Log: b.s.log}, Name: "http", Pool: pool, Config: lc.HTTPS,
		ACME: m.HTTPChallengeHandler(http.NotFoundHandler()),
	}}
	for _, addr := range lc.Listen {
		ln, err := b.socket(addr)
		if err != nil {
			return nil, fmt.Errorf("http listener: %w", err)
		}
		l.sockets = append(l.sockets, ln)
	}
	return l, nil
}

// watchCertificates runs an https listener's check that its back-ends
// present the edge's certificate (Extended Protection), until ctx ends.
func (l *listener) watchCertificates(ctx context.Context) {
	if l.watch != nil {
		go l.watch(ctx)
	}
}
