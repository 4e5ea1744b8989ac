//go:build linux

package proxy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

var (
	attacker = netip.MustParseAddr("203.0.113.66")
	home     = netip.MustParseAddr("198.51.100.7")
	office   = netip.MustParseAddr("192.0.2.10")
)

// Ten wrong passwords for alice from one address block that address for
// alice, and nowhere else: alice from home, with the right password, is
// let in while the attacker is blocked.
func TestThrottleBlocksTheAttackerNotTheUser(t *testing.T) {
	th := &Throttle{Delay: time.Millisecond}
	var blocked bool
	for i := range 10 {
		_, blocked = th.Failed(attacker, "alice")
		if blocked != (i == 9) {
			t.Fatalf("failure %d: blocked=%v", i+1, blocked)
		}
	}
	if !th.Blocked(attacker, "alice") {
		t.Fatal("the attacking address is not blocked for alice")
	}
	for range 40 { // the attacker goes on; blocked tries are refused before counting
		if !th.Blocked(attacker, "alice") {
			t.Fatal("the block did not hold")
		}
	}
	if th.Blocked(home, "alice") {
		t.Fatal("alice is locked out at home by failures from another address")
	}
	th.Succeeded(home, "alice")
	if th.Blocked(home, "alice") || !th.Blocked(attacker, "alice") {
		t.Error("a login at home changed who is blocked")
	}
}

// A password sprayer trying many users from one address blocks that
// address for every user once it reaches AddressLimit; others go on.
func TestThrottleAddressLimitStopsSpraying(t *testing.T) {
	th := &Throttle{Delay: time.Millisecond, AddressLimit: 20}
	for i := range 20 {
		th.Failed(attacker, fmt.Sprintf("user%d", i))
	}
	if !th.Blocked(attacker, "nobody-tried-yet") || !th.Blocked(attacker, "") {
		t.Error("the spraying address is not blocked")
	}
	if th.Blocked(office, "user1") {
		t.Error("user1 is blocked from the office")
	}
}

// Failures for alice from elsewhere slow a wrong password from an address
// alice has not used, by at most SoftDelay, and never from one she has.
func TestThrottleSoftDelayFromUnknownAddresses(t *testing.T) {
	th := &Throttle{} // the defaults: 1s a failure, SoftDelay 3s
	for i := range 30 {
		th.Failed(netip.AddrFrom4([4]byte{10, 0, byte(i / 5), byte(i)}), "alice") // a botnet, five tries an address
	}
	th.Succeeded(home, "alice")
	wait, blocked := th.Failed(office, "Alice")
	if blocked || wait != 3*time.Second {
		t.Errorf("first failure from a new address: wait %v blocked %v, want 3s (SoftDelay) and not blocked", wait, blocked)
	}
	if wait, _ := th.Failed(home, "alice"); wait != time.Second {
		t.Errorf("first failure from a familiar address waits %v, want 1s (its own count only)", wait)
	}
	if th.Blocked(office, "alice") || th.Blocked(home, "alice") {
		t.Error("failures elsewhere blocked alice")
	}
}

// A block lasts Window from the failure that reached it, then goes.
func TestThrottleBlockExpires(t *testing.T) {
	st := NewLocalStore(0)
	now := time.Unix(1_000_000, 0)
	st.now = func() time.Time { return now }
	th := &Throttle{Limit: 3, Window: time.Minute, Store: st}
	for i := range 3 {
		if i > 0 {
			now = now.Add(20 * time.Second)
		}
		th.Failed(attacker, "alice")
	}
	now = now.Add(50 * time.Second) // past the first failure's window, within the block's
	if !th.Blocked(attacker, "alice") {
		t.Fatal("not blocked 50s after the third failure")
	}
	now = now.Add(10 * time.Second)
	if th.Blocked(attacker, "alice") {
		t.Error("still blocked a window after the block began")
	}
}

// `CORP\alice` over HTTPS, alice@example.com over IMAP and a bare alice
// over POP3 are one user: their failures add up.
func TestThrottleRealmsJoinSpellings(t *testing.T) {
	th := &Throttle{Limit: 6, Delay: time.Millisecond}
	th.SetRealms(Realms{Domains: map[string]string{"CORP": "Example.COM"}, Default: "example.com"})
	for _, u := range []string{`CORP\alice`, "alice@example.com", "ALICE", `corp\Alice`, "Alice@Example.com"} {
		th.Failed(attacker, u)
	}
	_, blocked := th.Failed(attacker, "alice")
	if !blocked || !th.Blocked(attacker, `CORP\alice`) || !th.Blocked(attacker, "alice@EXAMPLE.com") {
		t.Error("the spellings did not meet")
	}
	if th.Blocked(attacker, `OTHER\alice`) || th.Blocked(attacker, "alice@other.example") {
		t.Error("another domain's alice is blocked")
	}
}

func TestRealmsCanonical(t *testing.T) {
	r := Realms{Domains: map[string]string{"Corp": "example.com"}, Default: "example.com"}
	for in, want := range map[string]string{
		`CORP\Alice`:        "alice@example.com",
		`example.com\alice`: "alice@example.com",
		`OTHER\alice`:       `other\alice`,
		"alice":             "alice@example.com",
		"Alice@Example.org": "alice@example.org",
	} {
		if got := r.Canonical(in); got != want {
			t.Errorf("Canonical(%q) = %q, want %q", in, got, want)
		}
	}
	if got := (Realms{}).Canonical("Alice"); got != "alice" {
		t.Errorf("without a default realm: %q", got)
	}
}

// 100,000 distinct failures (an attacker churning users and addresses)
// keep the store within its cap, count evictions, and evict no block:
// neither the attacker's own nor another address's.
func TestThrottleChurnStaysWithinCapAndKeepsBlocks(t *testing.T) {
	st := NewLocalStore(1000)
	th := &Throttle{Limit: 3, AddressLimit: 50, Delay: time.Millisecond, Store: st}
	for range 3 {
		th.Failed(office, "alice")
	}
	for i := range 50 {
		th.Failed(attacker, fmt.Sprintf("spray%d", i))
	}
	if !th.Blocked(office, "alice") || !th.Blocked(attacker, "x") {
		t.Fatal("not blocked before the churn")
	}
	before := st.Evictions()
	for i := range 100_000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		th.Failed(ip, fmt.Sprintf("u%d", i))
		if i%2 == 0 {
			th.Failed(attacker, fmt.Sprintf("churn%d", i)) // the blocked address churning keys itself
		}
	}
	if n := st.Len(); n > 1000 {
		t.Errorf("store holds %d entries, cap 1000", n)
	}
	if st.Evictions() == before {
		t.Error("no eviction counted")
	}
	if !th.Blocked(office, "alice") || !th.Blocked(attacker, "x") {
		t.Error("the churn evicted a block")
	}
}

// Kept entries go too, least recent first, when nothing else is left.
func TestLocalStoreEvictsKeptLast(t *testing.T) {
	st := NewLocalStore(2)
	st.Incr("a", time.Hour)
	st.Keep("a", time.Hour)
	st.Incr("b", time.Hour)
	st.Keep("b", time.Hour)
	st.Incr("c", time.Hour) // room is made from the kept ones: "a" is the older
	if st.Count("a") != 0 || st.Count("b") != 1 || st.Count("c") != 1 {
		t.Errorf("a=%d b=%d c=%d, want 0 1 1", st.Count("a"), st.Count("b"), st.Count("c"))
	}
	st.Incr("d", time.Hour) // "c" is plain: it goes before the kept "b"
	if st.Count("b") != 1 || st.Count("c") != 0 {
		t.Errorf("b=%d c=%d, want 1 0", st.Count("b"), st.Count("c"))
	}
}

// The address's own count slows its answers too: a tenth of Delay per
// failure with the default limits.
func TestThrottleAddressDelay(t *testing.T) {
	th := &Throttle{Delay: time.Second}
	var wait time.Duration
	for i := range 25 {
		wait, _ = th.Failed(attacker, fmt.Sprintf("user%d", i))
	}
	if wait != 2500*time.Millisecond {
		t.Errorf("25th failure from one address, each for another user: wait %v, want 2.5s", wait)
	}
}

// The README's defaults: 100 failures from one address block it.
func TestThrottleDefaultAddressLimit(t *testing.T) {
	th := &Throttle{}
	for i := range 99 {
		th.Failed(attacker, fmt.Sprintf("user%d", i))
	}
	if th.Blocked(attacker, "") {
		t.Fatal("blocked after 99 failures")
	}
	if _, blocked := th.Failed(attacker, "user99"); !blocked || !th.Blocked(attacker, "anyone") {
		t.Error("not blocked after 100 failures")
	}
}

// An IPv6 client picks its address from a /64 at will: a guesser hopping
// addresses within one /64 is one address to the throttle, blocked for
// the user and then for everyone as from a single address. The user from
// another /64 is let in, and an IPv4-mapped address counts as the IPv4
// one.
func TestThrottleIPv6CountsBySlash64(t *testing.T) {
	th := &Throttle{Delay: time.Millisecond, Limit: 3, AddressLimit: 6}
	hop := func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0x66, 15: byte(i + 1)})
	}
	for i := range 3 {
		th.Failed(hop(i), "alice")
	}
	if !th.Blocked(hop(100), "alice") {
		t.Error("a fresh address in the guesser's /64 is not blocked for alice")
	}
	for i := range 3 {
		th.Failed(hop(10+i), fmt.Sprintf("spray%d", i))
	}
	if !th.Blocked(hop(200), "bob") {
		t.Error("a fresh address in the sprayer's /64 is not blocked")
	}
	neighbour := netip.MustParseAddr("2001:db8:0:67::1")
	if th.Blocked(neighbour, "alice") || th.Blocked(neighbour, "bob") {
		t.Error("a client in the next /64 is blocked")
	}

	v4 := netip.MustParseAddr("203.0.113.9")
	mapped := netip.AddrFrom16(v4.As16())
	for range 3 {
		th.Failed(mapped, "carol")
	}
	if !th.Blocked(v4, "carol") {
		t.Error("failures from the IPv4-mapped address do not count for the IPv4 one")
	}
}
