package imap

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// logins counts login attempts. Label values: listener is the listener's
// name; mechanism is login (the LOGIN command), plain or authlogin
// (AUTHENTICATE PLAIN or LOGIN); outcome is ok, failed (wrong
// credentials, refused by the lookup), unavailable (no route or back-end
// now) or blocked (throttled).
var logins = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "gatehouse_imap_logins_total",
	Help: "IMAP login attempts, by listener, mechanism (login, plain: AUTHENTICATE PLAIN, authlogin: AUTHENTICATE LOGIN) and outcome (ok, failed, unavailable, blocked).",
}, []string{"listener", "mechanism", "outcome"})
