package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// idleTimeout closes a kept-alive admin connection that sends no next
// request: without it net/http keeps an idle connection forever (neither
// ReadTimeout nor IdleTimeout is set), so anyone who can reach the port
// could hold descriptors without a token (a /healthz or a 401 is enough).
// The status page polls far more often than this.
var idleTimeout = 2 * time.Minute

// Options configure an admin listener.
type Options struct {
	// Token, when set, is required by everything but /healthz: as a
	// bearer token, or as the password of HTTP basic authentication (any
	// user name) so that a browser can log in to the status page.
	Token string
	// Names are the host names, besides localhost and the listener's own
	// IP addresses, that a request's Host may carry.
	Names []string
	// Pprof serves /debug/pprof/ (behind the token when there is one).
	Pprof bool
	// Log receives refusals and operator actions; nil means slog.Default.
	Log *slog.Logger
}

// Admin is one admin listener: its socket, its HTTP server and the status
// page's rate sampler.
type Admin struct {
	ln   net.Listener
	http *http.Server
	log  *slog.Logger

	ctx  context.Context // lives until Close: the rate sampler
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// New prepares the admin listener on ln (a TLS listener off loopback) for
// srv; nothing is served until Start.
func New(ln net.Listener, opt Options, srv Server) *Admin {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	a := &Admin{ln: ln, log: opt.Log}
	a.ctx, a.stop = context.WithCancel(context.Background())
	page := newStatusPage(srv, opt.Log, sampleEvery)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		page.sampler.run(a.ctx)
	}()
	g := newGuard(ln.Addr(), opt)
	a.http = &http.Server{Handler: g.wrap(mux(srv, page, opt)), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idleTimeout}
	return a
}

// mux routes the admin paths.
func mux(srv Server, page http.Handler, opt Options) *http.ServeMux {
	m := http.NewServeMux()
	m.Handle("GET /metrics", promhttp.Handler())
	m.Handle("GET /{$}", page)
	api := &api{srv: srv, log: opt.Log, authenticated: opt.Token != ""}
	m.HandleFunc("GET /api/status", api.status)
	m.HandleFunc("POST /api/backends/{name}/{action}", api.backendAction)
	m.HandleFunc("POST /api/reload", api.reload)
	if opt.Pprof {
		m.HandleFunc("GET /debug/pprof/", pprof.Index)
		m.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		m.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		m.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		m.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	return m
}

// Start serves in the background until Close.
func (a *Admin) Start() {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.http.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin listener stopped", "err", err)
		}
	}()
}

// Close stops serving at once, closes the socket and waits for the
// sampler to end.
func (a *Admin) Close() error {
	err := a.http.Close()
	a.ln.Close() // not served yet when Start never ran
	a.stop()
	a.wg.Wait()
	return err
}

// Addr returns the listener's address.
func (a *Admin) Addr() net.Addr { return a.ln.Addr() }
