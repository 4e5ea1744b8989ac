package config

import (
	"fmt"
	"net/netip"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// Values the decoder parses once, as it reads the file (any type whose
// pointer is an encoding.TextUnmarshaler): a bad one is refused at its
// line and column, and the builder takes the typed value as it is.

// Prefix is an address range written as a CIDR (10.0.0.0/8) or a single
// address (192.0.2.7, which means /32 or /128).
type Prefix struct{ netip.Prefix }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Prefix) UnmarshalText(b []byte) error {
	v, err := ParsePrefix(string(b))
	p.Prefix = v
	return err
}

// Prefixes returns the ranges as netip.Prefix values.
func Prefixes(ps []Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.Prefix
	}
	return out
}

// ProxyVersion is the PROXY protocol version a listener sends: "v1",
// "v2", or "none" / "" (0).
type ProxyVersion byte

// UnmarshalText implements encoding.TextUnmarshaler.
func (v *ProxyVersion) UnmarshalText(b []byte) error {
	n, err := proxy.ProxyVersion(string(b))
	*v = ProxyVersion(n)
	return err
}

// ParsePrefix accepts a CIDR or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad address range %q: want a CIDR like 10.0.0.0/8 or an address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
