package pop3

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// logins counts login attempts. Label values: listener is the listener's
// name; mechanism is user (USER/PASS), plain or login (AUTH); outcome is
// ok, failed (wrong credentials, refused by the lookup), unavailable (no
// route or back-end now) or blocked (throttled).
var logins = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "gatehouse_pop3_logins_total",
	Help: "POP3 login attempts, by listener, mechanism (user, plain, login) and outcome (ok, failed, unavailable, blocked).",
}, []string{"listener", "mechanism", "outcome"})
