//go:build linux

package proxy

import (
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Throttle slows and then stops password guessing without letting a
// guesser lock anyone out (the models are Dovecot's auth penalty and
// Microsoft's smart lockout). Every frontend shares one per process, so
// failed SMTP AUTH, POP3/IMAP logins and HTTP 401s all count against the
// same keys: a guesser cannot switch protocols to start over, and Realms
// make `CORP\alice`, `alice@example.com` and `alice` one user.
//
// Each failure within Window counts three times: for the client address
// (an IPv6 /64 is one address: see source), for the user at that address,
// and for the user anywhere. Only the first
// two block: an address after AddressLimit failures (whatever the users),
// a user at one address after Limit. The user-wide count never blocks and
// never delays a correct password; it only lengthens, up to SoftDelay, the
// pause before a wrong-password answer from an address the user has not
// logged in from lately. So a correct password from an address that has
// not failed is never refused, however many addresses guess at the user.
//
// Counters live in Store (a LocalStore with a cap of DefaultMaxEntries when
// nil); blocks are kept there, so churning keys cannot evict a block. The
// zero value uses the defaults documented on each field; set the fields
// before first use.
type Throttle struct {
	// Limit is how many failures of one user from one address within
	// Window block that user at that address; 0 means 10.
	Limit int
	// AddressLimit is how many failures from one address, for any users,
	// within Window block the address; 0 means 100 (a company's NAT
	// carries many users, each with an old password on some phone).
	AddressLimit int
	// Window is how long a failure counts, and a block lasts from the
	// failure that reached it; 0 means 15 minutes.
	Window time.Duration
	// Delay is the pause per failure before a wrong-password answer; 0
	// means 1s. The pause never exceeds 10s.
	Delay time.Duration
	// SoftDelay caps the pause that failures for the user from other
	// addresses add at an address the user has not logged in from within
	// a week; 0 means 3s.
	SoftDelay time.Duration
	// Store keeps the counters; nil means a LocalStore of DefaultMaxEntries.
	Store CounterStore

	realms    atomic.Pointer[Realms]
	storeOnce sync.Once
	store     CounterStore
}

// familiarFor is how long a successful login makes an address familiar
// for its user (no soft delay for that user's failures there).
const familiarFor = 7 * 24 * time.Hour

// maxDelay bounds every pause before a wrong-password answer.
const maxDelay = 10 * time.Second

// SetRealms sets how user names are folded into one key. It is safe to
// call while the Throttle is in use (a reload).
func (t *Throttle) SetRealms(r Realms) {
	r = r.normalized()
	t.realms.Store(&r)
}

// Blocked reports whether the address, or the user at this address, has
// used up its failures. Check it before trying a login: a blocked client
// is refused without asking the back-end. Failures for the user from
// other addresses never block here.
func (t *Throttle) Blocked(ip netip.Addr, user string) bool {
	if t == nil { // no throttle: nobody is blocked
		return false
	}
	st := t.counters()
	if st.Count(addrKey(ip)) >= t.addressLimit() {
		return true
	}
	return user != "" && st.Count(pairKey(t.canonical(user), ip)) >= t.limit()
}

// Failed records a failed login and returns how long to wait before
// answering, and whether the client is now blocked.
func (t *Throttle) Failed(ip netip.Addr, user string) (wait time.Duration, blocked bool) {
	if t == nil {
		return 0, false
	}
	st, w := t.counters(), t.window()
	a := st.Incr(addrKey(ip), w)
	if a >= t.addressLimit() {
		st.Keep(addrKey(ip), w)
		blocked = true
	}
	wait = t.delay() * time.Duration(a*t.limit()) / time.Duration(t.addressLimit())
	if user == "" {
		return min(wait, maxDelay), blocked
	}
	u := t.canonical(user)
	p := st.Incr(pairKey(u, ip), w)
	if p >= t.limit() {
		st.Keep(pairKey(u, ip), w)
		blocked = true
	}
	wait = max(wait, t.delay()*time.Duration(p))
	elsewhere := st.Incr(userKey(u), w) - p
	if elsewhere > 0 && st.Count(familiarKey(u, ip)) == 0 {
		wait = max(wait, min(t.delay()*time.Duration(elsewhere), t.softDelay()))
	}
	return min(wait, maxDelay), blocked
}

// Succeeded records a successful login: it forgets the user's failures at
// this address and makes the address familiar for the user. The address's
// own count stays (a guesser who owns one account must not reset its
// count with it), as does the user-wide count.
func (t *Throttle) Succeeded(ip netip.Addr, user string) {
	if t == nil || user == "" {
		return
	}
	st, u := t.counters(), t.canonical(user)
	st.Delete(pairKey(u, ip))
	st.Incr(familiarKey(u, ip), familiarFor)
}

// counters returns the store, making the default one on first use.
func (t *Throttle) counters() CounterStore {
	t.storeOnce.Do(func() {
		t.store = t.Store
		if t.store == nil {
			t.store = NewLocalStore(0)
		}
	})
	return t.store
}

func (t *Throttle) canonical(user string) string {
	if r := t.realms.Load(); r != nil {
		return r.Canonical(user)
	}
	return strings.ToLower(user)
}

func (t *Throttle) limit() int        { return positive(t.Limit, 10) }
func (t *Throttle) addressLimit() int { return positive(t.AddressLimit, 100) }

func (t *Throttle) window() time.Duration    { return positiveDur(t.Window, 15*time.Minute) }
func (t *Throttle) delay() time.Duration     { return positiveDur(t.Delay, time.Second) }
func (t *Throttle) softDelay() time.Duration { return positiveDur(t.SoftDelay, 3*time.Second) }

func positive(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func positiveDur(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// The store's keys; '|' cannot occur in an address, and a user name that
// holds one only makes its own key longer.
func addrKey(ip netip.Addr) string               { return "a|" + source(ip) }
func userKey(u string) string                    { return "u|" + u }
func pairKey(u string, ip netip.Addr) string     { return "p|" + source(ip) + "|" + u }
func familiarKey(u string, ip netip.Addr) string { return "f|" + source(ip) + "|" + u }

// source is the client as the throttle counts it: an IPv4 address (also
// when it comes IPv4-mapped), or the /64 an IPv6 address is in. One host,
// or one LAN, gets a /64 to pick addresses from at will (SLAAC, privacy
// addresses), so counting each IPv6 address apart would give a guesser
// endless fresh addresses, each with its own limits; a /64 is the IPv6
// counterpart of an IPv4 address behind NAT. (Dovecot's auth penalty goes
// further, to the /48, which would let one host refuse its neighbours.)
func source(ip netip.Addr) string {
	ip = ip.Unmap()
	if !ip.Is6() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

// Realms fold the spellings of one account into one throttle key:
// `CORP\alice` (Windows clients over HTTPS), `alice@example.com` (mail
// clients) and a bare `alice`.
type Realms struct {
	// Domains maps NetBIOS domain names (any case) to DNS domains, e.g.
	// CORP: example.com.
	Domains map[string]string
	// Default is the DNS domain of a bare user name; "" leaves bare names
	// as they are.
	Default string
}

// normalized returns r with lower-case domain names.
func (r Realms) normalized() Realms {
	n := Realms{Default: strings.ToLower(r.Default), Domains: make(map[string]string, len(r.Domains))}
	for k, v := range r.Domains {
		n.Domains[strings.ToLower(k)] = strings.ToLower(v)
	}
	return n
}

// Canonical returns the one spelling of user: lower case, `DOMAIN\name`
// turned into `name@dns-domain` when DOMAIN is a known NetBIOS name (or
// itself a DNS name), and a bare name given the default domain. Other
// names come back lower-cased.
func (r Realms) Canonical(user string) string {
	u := strings.ToLower(user)
	if dom, name, ok := strings.Cut(u, `\`); ok {
		if d := r.domain(dom); d != "" {
			return name + "@" + d
		}
		if strings.Contains(dom, ".") {
			return name + "@" + dom
		}
		return u
	}
	if !strings.Contains(u, "@") && r.Default != "" {
		return u + "@" + r.Default
	}
	return u
}

// domain returns the DNS domain of a NetBIOS name, matched in any case.
func (r Realms) domain(netbios string) string {
	if d, ok := r.Domains[netbios]; ok {
		return strings.ToLower(d)
	}
	for k, d := range r.Domains {
		if strings.EqualFold(k, netbios) {
			return strings.ToLower(d)
		}
	}
	return ""
}
