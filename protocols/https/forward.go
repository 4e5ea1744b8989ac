package https

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// exchange sends the request over u and relays the response: the head,
// then the body streaming up in a goroutine of its own while the
// response streams down.
func (s *session) exchange(u *upstream, r *request) outcome {
	x := outcome{keep: !r.close}
	n, err := s.writeRequestHead(u, r)
	x.up = n
	if err != nil {
		u.broken = true
		s.failed(r, &x, fmt.Errorf("sending the request to %s: %w", u.b.Name, err), nil)
	} else {
		s.cur.Store(u)
		p := s.sendBody(u, r)
		s.relayResponse(u, r, &x, p)
		s.finishBody(u, &x, p)
		s.cur.Store(nil)
	}
	u.up += x.up
	u.down += x.down
	u.used = time.Now()
	u.releaseReader()
	if u.broken {
		s.drop(u)
		if u.pinned {
			x.keep = false
		}
	}
	return x
}

// relayResponse reads the back-end's response and relays it to the
// client: informational responses as they come, then the final one.
func (s *session) relayResponse(u *upstream, r *request, x *outcome, p *bodyPump) {
	if p.done == nil {
		s.releaseReader() // nothing reads the client until the response is over
	}
	err := u.awaitResponse(r.longPoll())
	status := 0
	if err == nil {
		status, err = s.readFinalHead(u, r)
	}
	if err == nil && status == 101 && !r.upgrade {
		err = fmt.Errorf("%w: 101 to a request that asked for no upgrade", errMalformed)
	}
	if err != nil {
		u.broken = true
		s.failed(r, x, fmt.Errorf("reading the response of %s: %w", u.b.Name, err), p)
		return
	}
	x.status = status
	if r.creds.connAuth || bindsConnection(status, &s.resp) {
		s.pin(u)
	}
	s.accountLogin(r, status)
	if status == 101 && r.upgrade {
		s.tunnel(u, x)
		return
	}
	kind, length, err := responseFraming(r, status, &s.resp)
	if err != nil {
		u.broken = true
		s.failed(r, x, fmt.Errorf("response of %s: %w", u.b.Name, err), p)
		return
	}
	s.relayFinal(u, r, x, kind, length)
}

// relayFinal writes the final response head and streams its body.
func (s *session) relayFinal(u *upstream, r *request, x *outcome, kind bodyKind, length int64) {
	dechunk := kind == bodyChunked && r.minor == 0
	if kind == bodyToEOF || closes(&s.resp) {
		u.broken = true
	}
	if kind == bodyToEOF || dechunk || (u.broken && u.pinned) || s.f.draining.Load() {
		x.keep = false
	}
	n, err := s.writeResponseHead(r, kind, dechunk, x.keep)
	x.down += n
	if err == nil {
		n, err = s.copyResponseBody(u, kind, length, dechunk)
		x.down += n
	}
	if err == nil {
		err = s.wr().Flush()
	}
	if err != nil {
		u.broken, x.keep = true, false
		x.err, x.reason = fmt.Errorf("relaying the response of %s: %w", u.b.Name, err), "aborted"
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errChunk) {
			x.reason = "backend_failed"
		}
	}
}

func (s *session) copyResponseBody(u *upstream, kind bodyKind, length int64, dechunked bool) (int64, error) {
	switch {
	case kind == bodyFixed:
		return copyFixed(s.wr(), u.rd(), length)
	case kind == bodyChunked && dechunked:
		return dechunk(s.wr(), u.rd())
	case kind == bodyChunked:
		return copyChunked(s.wr(), u.rd())
	case kind == bodyToEOF:
		return copyToEOF(s.wr(), u.rd())
	}
	return 0, nil
}

// readFinalHead reads response heads until a final one (or 101),
// relaying informational ones to HTTP/1.1 clients (RFC 9110 section
// 15.2), except a 100 Continue that gatehouse already sent itself.
func (s *session) readFinalHead(u *upstream, r *request) (int, error) {
	for {
		err := readHead(u.rd(), s.resBuf, s.f.Config.MaxHeaderBytes, &s.resp)
		if err != nil {
			return 0, unexpected(err)
		}
		s.resBuf = s.resp.raw[:0]
		status, err := parseStatus(&s.resp)
		if err != nil || status >= 200 || status == 101 {
			return status, err
		}
		if r.minor == 0 || (status == 100 && r.answered100) {
			continue
		}
		e := emitter{w: s.wr()}
		e.startLine(&s.resp)
		for _, f := range s.resp.hdrs {
			e.field(f.name, f.value)
		}
		e.str("\r\n")
		if e.err != nil || s.wr().Flush() != nil {
			return 0, fmt.Errorf("relaying %d to the client: %w", status, e.err)
		}
	}
}

// parseStatus checks a status line and returns its code.
func parseStatus(h *head) (int, error) {
	c := h.line[1]
	if minor(h.line[0]) < 0 || len(c) != 3 || c[0] < '1' || c[0] > '5' ||
		c[1] < '0' || c[1] > '9' || c[2] < '0' || c[2] > '9' {
		return 0, fmt.Errorf("%w: status line %q %q", errMalformed, clip(h.line[0]), clip(c))
	}
	return int(c[0]-'0')*100 + int(c[1]-'0')*10 + int(c[2]-'0'), nil
}

// responseFraming finds how a response body is delimited (RFC 9112
// section 6.3).
func responseFraming(r *request, status int, h *head) (bodyKind, int64, error) {
	if string(r.method) == "HEAD" || status == 204 || status == 304 || status < 200 {
		return bodyNone, 0, nil
	}
	if te, chunked := h.transferEncoding(); te {
		if chunked {
			return bodyChunked, 0, nil
		}
		return bodyToEOF, 0, nil
	}
	n, err := h.contentLength()
	switch {
	case err != nil:
		return 0, 0, err
	case n == 0:
		return bodyNone, 0, nil
	case n > 0:
		return bodyFixed, n, nil
	}
	return bodyToEOF, 0, nil
}

// closes reports whether the back-end will close after this response.
func closes(h *head) bool {
	if minor(h.line[0]) == 0 {
		return !h.has("Connection", "keep-alive")
	}
	return h.has("Connection", "close")
}

// failed answers a request whose response never began: 400 when the
// client's own chunked body was malformed (the back-end connection was
// closed for it), else 502 for a back-end that failed. The client
// connection stays open only when the whole request was read (sent) and
// no login was lost.
func (s *session) failed(r *request, x *outcome, err error, p *bodyPump) {
	if p != nil && p.malformed.Load() {
		x.status, x.reason, x.err, x.keep = 400, "bad_request", fmt.Errorf("request body: %w", p.err), false
		s.answer(r, 400, "Bad Request", "malformed chunked body", true)
		return
	}
	x.status, x.reason, x.err = 502, "backend_failed", err
	x.keep = x.keep && p != nil && p.sent.Load() && s.pinned == nil && !s.aborted.Load()
	s.answer(r, 502, "Bad Gateway", "the back-end failed to answer", !x.keep)
}

// tunnel relays an upgraded connection (101 Switching Protocols) both ways
// until both sides have ended.
func (s *session) tunnel(u *upstream, x *outcome) {
	u.broken, x.keep = true, false
	e := emitter{w: s.wr()}
	e.startLine(&s.resp)
	for _, f := range s.resp.hdrs {
		e.field(f.name, f.value)
	}
	e.str("\r\n")
	x.down += e.n
	if e.err != nil || s.wr().Flush() != nil {
		return
	}
	up := make(chan int64, 1)
	go func() {
		n, _ := copyToEOF(u.wr(), s.rd())
		u.wr().Flush()
		closeWrite(u.conn, u.raw)
		up <- n
	}()
	n, _ := copyToEOF(s.wr(), u.rd())
	s.wr().Flush()
	closeWrite(s.conn, s.raw)
	x.down += n
	x.up += <-up
}

// closeWrite half-closes a connection: TLS with close_notify, else TCP.
func closeWrite(c, raw net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
