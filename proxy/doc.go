//go:build linux

// Package proxy is gatehouse's protocol-blind engine: listeners with
// connection limits and trusted PROXY headers, back-ends and the pools that
// pick among them (weighted round-robin, least connections, rendezvous
// affinity), dialing with failover, and Splice, the zero-copy byte pump that
// every frontend ends in.
//
// It runs on Linux only (every file carries the build constraint): Splice
// uses splice(2), idle sessions wait in epoll, and the descriptor budget
// reads RLIMIT_NOFILE. gatehouse has no fallback for other systems.
//
// Implementation notes (invariants):
//   - A client never meets a dead back-end while a live one exists: Pool.Dial
//     tries back-ends in policy order, each with the connect timeout, and
//     never sleeps between tries.
//   - Affinity is rendezvous hashing on a key (client IP, user, cookie) over
//     back-end names, so every gatehouse with the same config agrees on every
//     key without shared state, and a back-end that leaves moves only its
//     own keys.
//   - An idle spliced connection holds no buffer and no pipe (burst_linux.go),
//     and an idle L4 session not even a goroutine: its sockets wait in one
//     shared epoll instance (parker_linux.go, parked_linux.go).
//   - A direction reads and waits in one RawConn.Read call: each call resets
//     the poller's readiness, and a wait in a second call can sleep through
//     bytes that arrived in between.
//   - A connection Serve has counted is served, even if a shutdown begins
//     before its goroutine runs: reloads hand ports over without a reset.
//   - Limits outlive configurations: per-address and per-socket counts live
//     in a Gate the caller keeps per listener across reloads, so sessions
//     of an older Server count against a newer one's limits.
//   - Descriptors run out for clients first: every session is charged
//     SessionFDs against an FDBudget that leaves FDReserve of RLIMIT_NOFILE
//     to the admin listener, probes and dials; past it a connection is
//     closed at once. A dial that fails for a local reason (EMFILE…) never
//     counts against a back-end's health.
//   - The login Throttle blocks addresses and (user, address) pairs, never
//     a user everywhere. Its LocalStore is a hand-written two-tier LRU
//     (container/list): blocks need a tier of their own that plain entries
//     cannot evict, which no kept library offers.
//   - This package never imports health or a protocol package; health state
//     arrives through Backend.SetHealthy.
package proxy
