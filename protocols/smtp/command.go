package smtp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// maxVerb bounds a command verb; the longest gatehouse meets is Exchange's
// X-ANONYMOUSTLS (14).
const maxVerb = 20

var errBadCommand = errors.New("malformed command")

// parseCommand splits a client's command line (CRLF removed) into its verb,
// upper-cased, and its argument (RFC 5321 section 4.1.1: verb, then a
// space and parameters). Verbs are letters, digits and hyphens, so that
// X-EXPS and X-ANONYMOUSTLS pass while binary junk does not.
func parseCommand(line string) (verb, arg string, err error) {
	verb, arg, _ = strings.Cut(line, " ")
	if verb == "" || len(verb) > maxVerb {
		return "", "", fmt.Errorf("%w: %q", errBadCommand, truncate(line, 32))
	}
	for i := 0; i < len(verb); i++ {
		c := verb[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return "", "", fmt.Errorf("%w: %q", errBadCommand, truncate(line, 32))
		}
	}
	return strings.ToUpper(verb), strings.TrimSpace(arg), nil
}

// heloName returns the domain (or address literal) of a HELO/EHLO
// argument, which must be a single printable word (RFC 5321 section
// 4.1.1.1); "" when it is not.
func heloName(arg string) string {
	name, _, _ := strings.Cut(arg, " ")
	if name == "" || len(name) > 255 {
		return ""
	}
	for i := 0; i < len(name); i++ {
		if name[i] <= ' ' || name[i] > '~' {
			return ""
		}
	}
	return name
}

// xclientCommand builds Postfix's XCLIENT command with the attributes the
// back-end listed after XCLIENT in its EHLO reply (XCLIENT_README). NAME
// and ADDR come last: once ADDR is set the back-end may no longer take
// XCLIENT from us. Values are xtext (RFC 3461 section 4); the command
// stays within 512 bytes because only HELO can grow and it is capped.
func xclientCommand(offered string, p peer, helo string) string {
	names := make(map[string]bool)
	for _, n := range strings.Fields(offered) {
		names[strings.ToUpper(n)] = true
	}
	var b strings.Builder
	b.WriteString("XCLIENT")
	add := func(name, value string) {
		if !names[name] || value == "" {
			return
		}
		if v := xtext(value); len(v) <= 255 {
			b.WriteString(" " + name + "=" + v)
		}
	}
	add("PROTO", "ESMTP")
	add("HELO", helo)
	if p.local != nil {
		add("DESTADDR", xclientAddr(p.localIP))
		add("DESTPORT", strconv.Itoa(p.localPort))
	}
	add("PORT", strconv.Itoa(p.port))
	add("NAME", "[UNAVAILABLE]")
	add("ADDR", xclientAddr(p.ip))
	return b.String()
}

// xclientAddr writes an address as XCLIENT wants it: IPv4 dotted, IPv6
// with the "IPV6:" prefix and no brackets.
func xclientAddr(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return ""
	case ip.Unmap().Is4():
		return ip.Unmap().String()
	}
	return "IPV6:" + ip.String()
}

// xtext encodes s (RFC 3461 section 4): printable ASCII except "+" and "="
// as is, every other byte as "+" and two upper-case hex digits.
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '!' && c <= '~' && c != '+' && c != '=' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "+%02X", c)
	}
	return b.String()
}
