package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"
)

// Affinities the engine knows; protocol frontends add their own keys.
const (
	AffinityNone     = "none"
	AffinitySourceIP = "source-ip"
)

// TCP is the layer-4 frontend: it routes each connection by its client
// address (or not at all), optionally sends a PROXY header, and splices.
type TCP struct {
	// Pool holds the back-ends; required.
	Pool *Pool
	// Affinity is AffinitySourceIP to keep one client on one back-end;
	// "" or AffinityNone balances every connection by the pool's policy.
	Affinity string
	// ProxyVersion, 1 or 2, sends a PROXY header with the client's address
	// to the back-end; 0 sends none.
	ProxyVersion byte
	// Idle ends a session after this long with no byte either way; 0 means
	// no limit.
	Idle time.Duration
	// Log receives one line per session; nil means slog.Default().
	Log *slog.Logger
}

// ServeConn implements Handler.
func (t *TCP) ServeConn(ctx context.Context, conn net.Conn) {
	start := time.Now()
	key := ""
	if t.Affinity == AffinitySourceIP {
		key = addrOf(conn.RemoteAddr()).String()
	}
	be, b, err := t.Pool.Dial(ctx, key)
	if err != nil {
		noBackend.WithLabelValues(t.Pool.Name).Inc()
		t.log().Warn("session failed", "listener", t.Pool.Name, "client", conn.RemoteAddr().String(), "err", err)
		return
	}
	defer be.Close()
	up, down, err := t.relay(ctx, conn, be, b)
	outcome := "ok"
	switch {
	case errors.Is(err, ErrIdle):
		outcome = "idle_timeout"
	case err != nil:
		outcome = "error"
	}
	t.log().Info("session", "listener", t.Pool.Name, "client", conn.RemoteAddr().String(), "backend", b.Name,
		"up", up, "down", down, "duration", time.Since(start).Round(time.Millisecond), "outcome", outcome)
}

// relay sends the PROXY header if configured, then splices while the
// session is counted on the back-end.
func (t *TCP) relay(ctx context.Context, conn, be net.Conn, b *Backend) (up, down int64, err error) {
	release := b.Track(be)
	defer release()
	gauge := backendSessions.WithLabelValues(t.Pool.Name, b.Name)
	gauge.Inc()
	defer gauge.Dec()
	if t.ProxyVersion != 0 {
		if err := WriteProxyHeader(be, t.ProxyVersion, conn.RemoteAddr(), conn.LocalAddr()); err != nil {
			return 0, 0, err
		}
	}
	up, down, err = Splice(ctx, conn, be, t.Idle)
	CountBytes(t.Pool.Name, b.Name, up, down)
	return up, down, err
}

func (t *TCP) log() *slog.Logger {
	if t.Log != nil {
		return t.Log
	}
	return slog.Default()
}
