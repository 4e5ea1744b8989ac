// Package health checks back-ends the way their clients would and turns the
// results into up/down state.
//
// A [Probe] runs one check against one address: a TCP connect, a TLS
// handshake, an SMTP greeting and EHLO, a POP3 banner, an IMAP greeting, or an
// HTTP GET such as Exchange's /owa/healthcheck.htm. Mail probes always end the
// conversation politely (QUIT or LOGOUT), so that a back-end does not log a
// dropped connection every few seconds. A failure is an [*Error] that names
// the stage that failed: connect, tls, protocol, http or timeout.
//
// A [Monitor] runs one probe per (back-end, check) pair on an interval with
// rise and fall counts, and reports every change through a callback. The
// package knows nothing of the proxy: the caller wires the callback to its
// back-ends. State is kept per back-end and check, never per address, because
// one Exchange server can fail its OWA check while its EWS check passes.
//
// A probe that fails for a reason of gatehouse's own ([LocalError]: out of
// descriptors, buffers or local ports) has learnt nothing about the
// back-end: the Monitor logs it, counts it as result "unknown" and keeps the
// check's state, so a flood that exhausts gatehouse never marks its
// back-ends down.
//
// It imports no other gatehouse package: a Monitor reports transitions
// through a callback that the gatehouse package wires to the back-ends.
package health
