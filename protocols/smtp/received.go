package smtp

import (
	stdtls "crypto/tls"
	"fmt"
	"strings"
	"time"
)

// receivedHeader is the trace header gatehouse prepends to a message when
// the back-end can learn the client's address no other way (RFC 5321
// section 4.4): who the client said it was, its real address, and the TLS
// it spoke at the edge. The protocol names follow RFC 3848 (ESMTPS: with
// TLS, ESMTPA: authenticated).
func (s *session) receivedHeader(now time.Time) string {
	proto := "ESMTP"
	if s.tlsState != nil {
		proto += "S"
	}
	if s.user != "" {
		proto += "A"
	}
	return fmt.Sprintf("Received: from %s (%s)\r\n\tby %s (gatehouse) with %s%s\r\n\tid %s; %s\r\n",
		headerWord(s.helo), addressLiteral(s.peer), s.f.cfg.Hostname, proto, tlsComment(s.tlsState),
		s.id, now.Format(time.RFC1123Z))
}

// addressLiteral writes the client's address as RFC 5321 section 4.1.3
// does: [192.0.2.7] or [IPv6:2001:db8::7].
func addressLiteral(p peer) string {
	switch {
	case !p.ip.IsValid():
		return "unknown"
	case p.ip.Is4():
		return "[" + p.ip.String() + "]"
	}
	return "[IPv6:" + p.ip.String() + "]"
}

// tlsComment describes the edge TLS, as Postfix does in its own header.
func tlsComment(cs *stdtls.ConnectionState) string {
	if cs == nil {
		return ""
	}
	return fmt.Sprintf(" (%s with cipher %s)", stdtls.VersionName(cs.Version), stdtls.CipherSuiteName(cs.CipherSuite))
}

// headerWord makes a client-chosen name safe inside a header: printable
// ASCII without parentheses or backslashes (which would end or escape a
// comment), at most 255 bytes; "unknown" when nothing is left.
func headerWord(s string) string {
	s = strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' || r == '(' || r == ')' || r == '\\' {
			return '_'
		}
		return r
	}, s)
	if s == "" {
		return "unknown"
	}
	return s[:min(len(s), 255)]
}
