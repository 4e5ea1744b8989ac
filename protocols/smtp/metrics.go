package smtp

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The SMTP frontend's metrics. Label values: listener is the listener's
// name (the pool's), backend a back-end name ("" when none was reached).
var (
	sessionsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_smtp_sessions_total",
		Help: "SMTP sessions ended, by listener, backend, mode (relay, passthrough) and tls (yes: the client spoke TLS with gatehouse, no: it did not).",
	}, []string{"listener", "backend", "mode", "tls"})
	transactionsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_smtp_transactions_total",
		Help: "Mail transactions relayed, by listener, backend and outcome (accepted: the back-end said 2xx to the data, rejected: 5xx, deferred: 4xx including gatehouse's own for a lost back-end, aborted: the client gave up before the data was done).",
	}, []string{"listener", "backend", "outcome"})
	recipientsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_smtp_recipients_total",
		Help: "Recipients the back-end accepted (RCPT answered 2xx), by listener and backend.",
	}, []string{"listener", "backend"})
	messageBytesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_smtp_message_bytes_total",
		Help: "Message bytes read from clients and relayed to a back-end, by listener and backend.",
	}, []string{"listener", "backend"})
	repliesTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_smtp_replies_total",
		Help: "Replies to relayed commands as the client got them, by listener, backend, command (EHLO, AUTH, MAIL, RCPT, DATA) and class (2xx, 4xx, 5xx).",
	}, []string{"listener", "backend", "command", "class"})
	authTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_smtp_auth_total",
		Help: "AUTH attempts at the edge, by listener, mechanism (PLAIN, LOGIN) and outcome (success, failure, temporary, blocked: refused by the login throttle, tls_required: refused before STARTTLS).",
	}, []string{"listener", "mechanism", "outcome"})
	backendFailures = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_smtp_backend_failures_total",
		Help: "Back-end SMTP conversations that failed after the TCP connect, by listener, backend and stage (greeting, ehlo, starttls, xclient: before the client was served, so the next back-end was tried; lost: mid-session, the client got a 421).",
	}, []string{"listener", "backend", "stage"})
	identityRefused = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_smtp_identity_commands_refused_total",
		Help: "Client commands refused because they would change the back-end's view of the client, by listener and command (XCLIENT, XFORWARD).",
	}, []string{"listener", "command"})
)

// replyClass names the class of an SMTP reply code ("2xx", "4xx", "5xx").
func replyClass(code int) string {
	switch code / 100 {
	case 2:
		return "2xx"
	case 3:
		return "3xx"
	case 4:
		return "4xx"
	case 5:
		return "5xx"
	}
	return strconv.Itoa(code/100) + "xx"
}

// replyKey names one series of repliesTotal.
type replyKey struct{ backend, command, class string }

// counterCache keeps the reply counters a session used, so that counting
// a reply is a map lookup rather than a label hash and an allocation.
type counterCache map[replyKey]prometheus.Counter

func (cc counterCache) reply(listener string, k replyKey) prometheus.Counter {
	c, ok := cc[k]
	if !ok {
		c = repliesTotal.WithLabelValues(listener, k.backend, k.command, k.class)
		cc[k] = c
	}
	return c
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
