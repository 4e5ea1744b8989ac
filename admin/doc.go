// Package admin holds gatehouse's admin listener: the JSON API
// (/api/status, the operator's drain/enable/disable of a back-end,
// /api/reload), the status page at "/" and its template, the Prometheus
// endpoint /metrics, /healthz and, when asked for, /debug/pprof/.
//
// It sees the running gatehouse only through the Server interface (a
// status snapshot, the recent changes, the edge/back-end certificate
// comparisons, operator actions and reload), which the root package
// implements. It may import the standard library, client_golang's promhttp
// and nothing else of gatehouse: the root package imports admin, never the
// reverse, and no protocol package is needed to show a status.
//
// Invariants:
//   - every request passes the guard first (guard.go): a Host that is not
//     the listener's own IP, localhost or a configured name is refused
//     (DNS rebinding); a state-changing request from another origin is
//     refused (a web page must not drive the API); with a token, nothing
//     but /healthz answers without it;
//   - the status page and the API show only what Status holds, which
//     carries no token, password or key;
//   - the rate sampler's goroutine ends with Close.
package admin
