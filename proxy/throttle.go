package proxy

import (
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Throttle slows and then stops password guessing. Every frontend shares
// one per process, so failed SMTP AUTH, POP3/IMAP logins and HTTP 401s all
// count against the same client address and the same user name: a guesser
// cannot switch protocols to start over.
//
// Each failure within Window adds to two counters, the client address's
// and the user's. The caller waits Delay × failures before answering (so
// a wrong user and a wrong password take as long), and once either counter
// reaches Limit the client is told to go away until the window passes.
// The zero value uses the defaults documented on each field.
type Throttle struct {
	// Limit is how many failures within Window block an address or user;
	// 0 means 10.
	Limit int
	// Window is how long a failure counts; 0 means 15 minutes.
	Window time.Duration
	// Delay is the pause per failure before the answer; 0 means 1s, and
	// the pause never exceeds 10s.
	Delay time.Duration

	mu    sync.Mutex
	byKey map[string]*failures
	swept time.Time
}

// failures is the failure count of one key within its window.
type failures struct {
	n     int
	first time.Time
}

// Blocked reports whether the address or the user has used up its
// failures. Check it before trying a login: a blocked client is refused
// without asking the back-end.
func (t *Throttle) Blocked(ip netip.Addr, user string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	return t.count(ipKey(ip), now) >= t.limit() || (user != "" && t.count(userKey(user), now) >= t.limit())
}

// Failed records a failed login and returns how long to wait before
// answering, and whether the client is now blocked.
func (t *Throttle) Failed(ip netip.Addr, user string) (wait time.Duration, blocked bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.sweep(now)
	n := t.add(ipKey(ip), now)
	if user != "" {
		n = max(n, t.add(userKey(user), now))
	}
	wait = min(time.Duration(n)*t.delay(), 10*time.Second)
	return wait, n >= t.limit()
}

// Succeeded forgets the user's failures (not the address's: a guesser who
// owns one account must not reset its count with it).
func (t *Throttle) Succeeded(user string) {
	t.mu.Lock()
	delete(t.byKey, userKey(user))
	t.mu.Unlock()
}

func (t *Throttle) add(key string, now time.Time) int {
	if t.byKey == nil {
		t.byKey = make(map[string]*failures)
	}
	f := t.byKey[key]
	if f == nil || now.Sub(f.first) > t.window() {
		f = &failures{first: now}
		t.byKey[key] = f
	}
	f.n++
	return f.n
}

func (t *Throttle) count(key string, now time.Time) int {
	f := t.byKey[key]
	if f == nil || now.Sub(f.first) > t.window() {
		return 0
	}
	return f.n
}

// sweep drops expired entries at most once per window, so the map stays
// as small as the set of recent offenders.
func (t *Throttle) sweep(now time.Time) {
	if now.Sub(t.swept) < t.window() {
		return
	}
	t.swept = now
	for k, f := range t.byKey {
		if now.Sub(f.first) > t.window() {
			delete(t.byKey, k)
		}
	}
}

func (t *Throttle) limit() int {
	if t.Limit <= 0 {
		return 10
	}
	return t.Limit
}

func (t *Throttle) window() time.Duration {
	if t.Window <= 0 {
		return 15 * time.Minute
	}
	return t.Window
}

func (t *Throttle) delay() time.Duration {
	if t.Delay <= 0 {
		return time.Second
	}
	return t.Delay
}

func ipKey(ip netip.Addr) string { return "ip:" + ip.String() }

// userKey folds case: mail systems treat Alice and alice as one mailbox.
func userKey(u string) string { return "user:" + strings.ToLower(u) }
