//go:build linux

package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The engine's metrics. Label values: listener and pool are listener names
// from the config (an HTTP service pool is "listener/service"), backend is
// a back-end name, direction is "up" (client to back-end) or "down".
var (
	sessionsActive = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatehouse_sessions_active",
		Help: "Client sessions open now, by listener.",
	}, []string{"listener"})
	sessionsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_sessions_total",
		Help: "Client sessions accepted, by listener.",
	}, []string{"listener"})
	refusedTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_sessions_refused_total",
		Help: "Client connections refused before any routing, by listener and reason (per_ip_limit, proxy_header, shutdown, fd_reserve).",
	}, []string{"listener", "reason"})
	backendSessions = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatehouse_backend_sessions_active",
		Help: "Sessions open now to each back-end, by pool and backend.",
	}, []string{"pool", "backend"})
	bytesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_bytes_total",
		Help: "Bytes relayed, by pool, backend and direction (up: client to back-end, down: back-end to client).",
	}, []string{"pool", "backend", "direction"})
	dialFailures = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_backend_dial_failures_total",
		Help: "Failed connection attempts to a back-end, by pool and backend.",
	}, []string{"pool", "backend"})
	failovers = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_backend_failovers_total",
		Help: "Sessions that reached this back-end after an earlier one in their order failed, by pool and backend.",
	}, []string{"pool", "backend"})
	noBackend = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_no_backend_total",
		Help: "Sessions that found no back-end able to take them, by pool.",
	}, []string{"pool"})
)

// CountBytes adds a finished session's byte counts to the metrics.
func CountBytes(pool, backend string, up, down int64) {
	bytesTotal.WithLabelValues(pool, backend, "up").Add(float64(up))
	bytesTotal.WithLabelValues(pool, backend, "down").Add(float64(down))
}
