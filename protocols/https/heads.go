package https

import "bufio"

// emitter writes a head to a bufio.Writer, counting bytes and keeping the
// first error.
type emitter struct {
	w   *bufio.Writer
	n   int64
	err error
}

func (e *emitter) bytes(b []byte) {
	if e.err == nil {
		n, err := e.w.Write(b)
		e.n += int64(n)
		e.err = err
	}
}

func (e *emitter) str(s string) {
	if e.err == nil {
		n, err := e.w.WriteString(s)
		e.n += int64(n)
		e.err = err
	}
}

func (e *emitter) field(name, value []byte) {
	e.bytes(name)
	e.str(": ")
	e.bytes(value)
	e.str("\r\n")
}

// startLine writes a status line as the back-end sent it.
func (e *emitter) startLine(h *head) {
	e.bytes(h.line[0])
	e.str(" ")
	e.bytes(h.line[1])
	if h.line[2] != nil {
		e.str(" ")
		e.bytes(h.line[2])
	}
	e.str("\r\n")
}

// hopByHop reports headers that belong to one connection and are not
// forwarded (RFC 9110 section 7.6.1), besides those the Connection header
// names. Upgrade passes on an upgrade request and a 101.
func hopByHop(name []byte, upgrade bool) bool {
	switch {
	case equalFold(name, "Connection"), equalFold(name, "Keep-Alive"),
		equalFold(name, "Proxy-Connection"), equalFold(name, "TE"),
		equalFold(name, "Proxy-Authorization"), equalFold(name, "Proxy-Authenticate"):
		return true
	case equalFold(name, "Upgrade"):
		return !upgrade
	}
	return false
}

// nominated reports whether a Connection header of h names the header.
func nominated(h *head, name []byte) bool {
	for _, f := range h.hdrs {
		if !equalFold(f.name, "Connection") {
			continue
		}
		for v := f.value; len(v) > 0; {
			i := 0
			for i < len(v) && v[i] != ',' {
				i++
			}
			item := trimOWS(v[:i])
			if len(item) == len(name) && equalFoldBytes(item, name) {
				return true
			}
			if i == len(v) {
				break
			}
			v = v[i+1:]
		}
	}
	return false
}

// framing reports the headers that delimit a message's body.
func framing(name []byte) bool {
	return equalFold(name, "Content-Length") || equalFold(name, "Transfer-Encoding")
}

// forwardedHeader reports the headers that say who the client is, also
// spelled with underscores: IIS gives "X_Forwarded_For" to applications
// as the same server variable as "X-Forwarded-For" (HTTP_X_FORWARDED_FOR).
func forwardedHeader(name []byte) bool {
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Real-IP", "Forwarded"} {
		if equalDashFold(name, h) {
			return true
		}
	}
	return false
}

// pathOverride reports the headers with which some IIS modules and
// frameworks (URL Rewrite, ASP.NET) replace the request's path after the
// proxy routed it: a client's "X-Original-URL: /ecp/" on a request for
// /owa/ would get around the per-service allow lists. They are dropped
// from every client, trusted forwarders included.
func pathOverride(name []byte) bool {
	return equalDashFold(name, "X-Original-URL") || equalDashFold(name, "X-Rewrite-URL")
}

// equalDashFold is equalFold with "_" in b matching "-" in s.
func equalDashFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if c == '_' {
			c = '-'
		}
		if lower(c) != lower(s[i]) {
			return false
		}
	}
	return true
}

// writeRequestHead writes the request head for the back-end, serialised
// anew from what was parsed: the request line with HTTP/1.1, the
// client's headers in their own case minus hop-by-hop ones, each as
// "Name: value" CRLF, then who the client is. The headers that framed the
// body here (Content-Length, Transfer-Encoding) are never among those
// removed (parse refuses a Connection header naming them), so the
// back-end finds the body's end where gatehouse did.
func (s *session) writeRequestHead(u *upstream, r *request) (int64, error) {
	e := emitter{w: u.wr()}
	e.bytes(r.method)
	e.str(" ")
	e.bytes(r.target)
	e.str(" HTTP/1.1\r\n")
	trusted := s.trustedForwarder()
	var prior []byte
	for _, f := range r.hdrs {
		switch {
		case hopByHop(f.name, r.upgrade):
			continue
		case nominated(&r.head, f.name) && !(r.upgrade && equalFold(f.name, "Upgrade")):
			continue
		case r.answered100 && equalFold(f.name, "Expect"):
			continue
		case pathOverride(f.name):
			continue
		case forwardedHeader(f.name):
			if !trusted {
				continue
			}
			if equalDashFold(f.name, "X-Forwarded-For") {
				prior = appendList(prior, f.value)
				continue
			}
		}
		e.field(f.name, f.value)
	}
	if r.minor == 0 && r.hostCount() == 0 {
		e.str("Host: " + s.raw.LocalAddr().String() + "\r\n")
	}
	s.writeForwarded(&e, r, trusted, prior)
	if r.upgrade {
		e.str("Connection: Upgrade\r\n")
	}
	e.str("\r\n")
	return e.n, e.err
}

// writeForwarded adds X-Forwarded-For (extending a trusted upstream's),
// and X-Forwarded-Proto and X-Real-IP unless a trusted upstream set them.
func (s *session) writeForwarded(e *emitter, r *request, trusted bool, prior []byte) {
	ip := s.ip.String()
	e.str("X-Forwarded-For: ")
	if len(prior) > 0 {
		e.bytes(prior)
		e.str(", ")
	}
	e.str(ip + "\r\n")
	if !trusted || r.get("X-Forwarded-Proto") == nil {
		if s.tls {
			e.str("X-Forwarded-Proto: https\r\n")
		} else {
			e.str("X-Forwarded-Proto: http\r\n")
		}
	}
	if !trusted || r.get("X-Real-IP") == nil {
		e.str("X-Real-IP: " + ip + "\r\n")
	}
}

// trustedForwarder reports whether the client is an upstream proxy whose
// forwarding headers are believed.
func (s *session) trustedForwarder() bool {
	for _, p := range s.f.trusted {
		if p.Contains(s.ip) {
			return true
		}
	}
	return false
}

func appendList(list, v []byte) []byte {
	if len(list) > 0 {
		list = append(list, ", "...)
	}
	return append(list, v...)
}

// writeResponseHead writes the final response head for the client: the
// status line and headers as the back-end sent them minus hop-by-hop
// ones, the affinity cookie, and the Connection header the client needs.
func (s *session) writeResponseHead(r *request, kind bodyKind, dechunk, keep bool) (int64, error) {
	h := &s.resp
	te, _ := h.transferEncoding()
	e := emitter{w: s.wr()}
	e.startLine(h)
	for _, f := range h.hdrs {
		switch {
		case hopByHop(f.name, false):
			continue
		case nominated(h, f.name) && !framing(f.name): // the client frames by what gatehouse did
			continue
		case dechunk && equalFold(f.name, "Transfer-Encoding"):
			continue
		case te && equalFold(f.name, "Content-Length"): // RFC 9112 section 6.3, item 3
			continue
		}
		e.field(f.name, f.value)
	}
	if r.setCookie != "" {
		e.str("Set-Cookie: " + s.f.Config.CookieName + "=" + r.setCookie + "; Path=" + cookiePath(r) + "; HttpOnly; SameSite=Lax")
		if s.tls {
			e.str("; Secure")
		}
		e.str("\r\n")
	}
	switch {
	case !keep:
		e.str("Connection: close\r\n")
	case r.minor == 0 || minor(h.line[0]) == 0:
		e.str("Connection: keep-alive\r\n")
	}
	e.str("\r\n")
	return e.n, e.err
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFoldBytes is equalFold for two byte slices.
func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
