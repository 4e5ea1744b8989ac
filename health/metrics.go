package health

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of all Monitors, registered once with the default registry. The
// series of a check are deleted when the check is removed.
var (
	backendUp = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatehouse_backend_up",
		Help: "Whether a back-end passes a health check: 1 up, 0 down. " +
			"Labels: backend (back-end name), check (check name, e.g. smtp, owa).",
	}, []string{"backend", "check"})

	probeDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name: "gatehouse_health_probe_duration_seconds",
		Help: "Time taken by one health probe, passed or failed. " +
			"Labels: backend (back-end name), check (check name).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"backend", "check"})

	probesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_health_probes_total",
		Help: "Health probes run. Labels: backend (back-end name), check (check name), " +
			"result (ok: the probe passed, fail: it failed, unknown: it failed for a local reason " +
			"such as too many open files, and the state was kept).",
	}, []string{"backend", "check", "result"})
)

// deleteSeries drops every series of one check.
func deleteSeries(target, check string) {
	backendUp.DeleteLabelValues(target, check)
	probeDuration.DeleteLabelValues(target, check)
	probesTotal.DeleteLabelValues(target, check, "ok")
	probesTotal.DeleteLabelValues(target, check, "fail")
	probesTotal.DeleteLabelValues(target, check, "unknown")
}
