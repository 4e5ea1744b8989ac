package https

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The frontend's metrics. Label values: listener is the listener's name;
// service is owa, ecp, ews, activesync, rpc, mapi, autodiscover, oab,
// powershell or default; backend is a back-end name.
var (
	requestsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_http_requests_total",
		Help: "HTTP requests answered, by listener, service, method class (get, head, post, rpc, options, other) and status class (1xx..5xx; 5xx includes gatehouse's own 502/503).",
	}, []string{"listener", "service", "method", "code"})
	requestErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_http_request_errors_total",
		Help: "HTTP requests that failed, by listener, service and reason (bad_request, forbidden: the service's allow list does not hold the client, no_backend, backend_failed, aborted, throttled).",
	}, []string{"listener", "service", "reason"})
	longPolls = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatehouse_http_long_polls_active",
		Help: "Long-lived requests open now, by listener and service: ActiveSync Ping, MAPI NotificationWait, RPC over HTTP channels.",
	}, []string{"listener", "service"})
	pinnedActive = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatehouse_http_pinned_connections",
		Help: "Client connections pinned now to their own back-end connection by NTLM or Negotiate, by listener.",
	}, []string{"listener"})
	pinnedTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_http_pinned_connections_total",
		Help: "Client connections that were pinned to their own back-end connection by NTLM or Negotiate, by listener.",
	}, []string{"listener"})
	rpcPairs = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_http_rpc_channel_pairs_total",
		Help: "RPC over HTTP channel pairs (IN and OUT of one virtual connection cookie), by listener and result (together: same back-end, split: different back-ends).",
	}, []string{"listener", "result"})
	certMismatch = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatehouse_http_backend_certificate_mismatch",
		Help: "1 when a back-end presents another certificate than the listener's edge certificate (or is reached without TLS), which breaks NTLM and Negotiate under Exchange Extended Protection; 0 when they match. By listener and backend.",
	}, []string{"listener", "backend"})
	passthroughTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_http_passthrough_total",
		Help: "TLS connections passed through to back-ends untouched by SNI, by listener and service.",
	}, []string{"listener", "service"})
)

// methodClass maps a method to its metric label.
func methodClass(m []byte) string {
	switch {
	case string(m) == "GET":
		return "get"
	case string(m) == "HEAD":
		return "head"
	case string(m) == "POST":
		return "post"
	case string(m) == "OPTIONS":
		return "options"
	case isRPCMethod(m):
		return "rpc"
	}
	return "other"
}

// codeClass maps a status to its metric label.
func codeClass(status int) string {
	switch {
	case status >= 100 && status < 600:
		return [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}[status/100-1]
	}
	return "5xx"
}

func isRPCMethod(m []byte) bool {
	return string(m) == "RPC_IN_DATA" || string(m) == "RPC_OUT_DATA"
}
