package https

import (
	"bytes"
	"errors"
	"fmt"
)

// request is one client request as the session routes and forwards it.
type request struct {
	head
	method, target []byte
	path, query    []byte
	minor          int // HTTP/1.minor
	service        string
	kind           bodyKind
	length         int64 // Content-Length of a fixed body
	close          bool  // the client does not keep the connection
	expect         bool  // Expect: 100-continue
	upgrade        bool  // Connection: upgrade with an Upgrade header
	answered100    bool  // gatehouse sent 100 Continue itself
	creds          credentials
	rts            *rts   // first PDU of an RPC channel, when read for routing
	cookieBackend  string // back-end the route preferred (affinity cookie, RPC table)
	setCookie      string // affinity cookie value to set in the response
}

// httpError is a request gatehouse answers itself.
type httpError struct {
	status int
	reason string
	err    error
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s: %v", e.status, e.reason, e.err) }
func (e *httpError) Unwrap() error { return e.err }

func badRequest(err error) error { return &httpError{400, "Bad Request", err} }

// parse fills the request from its head; the error, when not nil, is an
// *httpError naming the answer.
func (r *request) parse() error {
	r.method, r.target = r.line[0], r.line[1]
	if r.minor = minor(r.line[2]); r.minor < 0 {
		return &httpError{505, "HTTP Version Not Supported", fmt.Errorf("version %q", clip(r.line[2]))}
	}
	if !isToken(string(r.method)) {
		return badRequest(fmt.Errorf("method %q", clip(r.method)))
	}
	if err := r.parseTarget(); err != nil {
		return err
	}
	if err := r.parseFraming(); err != nil {
		return err
	}
	r.parseConnection()
	return nil
}

// parseTarget accepts origin-form, "*" for OPTIONS and absolute-form
// (RFC 9112 section 3.2), which it reduces to origin-form.
func (r *request) parseTarget() error {
	t := r.target
	switch {
	case string(r.method) == "CONNECT":
		return &httpError{405, "Method Not Allowed", errors.New("CONNECT")}
	case string(t) == "*" && string(r.method) == "OPTIONS":
		r.path, r.query = t, nil
		return nil
	case hasPrefixFold(t, "http://") || hasPrefixFold(t, "https://"):
		rest := t[bytes.Index(t, []byte("//"))+2:]
		i := bytes.IndexAny(rest, "/?")
		if i < 0 {
			t = []byte("/")
		} else if t = rest[i:]; t[0] == '?' {
			t = append([]byte("/"), t...)
		}
		r.target = t
	case len(t) == 0 || t[0] != '/':
		return badRequest(fmt.Errorf("target %q", clip(t)))
	}
	r.path, r.query = splitTarget(r.target)
	if dotSegments(r.path) {
		return badRequest(fmt.Errorf("dot segments in %q", clip(r.path)))
	}
	if r.minor >= 1 && r.hostCount() != 1 {
		return badRequest(errors.New("HTTP/1.1 request without exactly one Host"))
	}
	return nil
}

func (r *request) hostCount() int {
	n := 0
	for _, f := range r.hdrs {
		if equalFold(f.name, "Host") {
			n++
		}
	}
	return n
}

// parseFraming finds how the body is delimited (RFC 9112 section 6.3): a
// request with both Transfer-Encoding and Content-Length, or a
// Transfer-Encoding that does not end in chunked, or one on HTTP/1.0, is
// refused.
func (r *request) parseFraming() error {
	te, chunked := r.transferEncoding()
	n, err := r.contentLength()
	switch {
	case err != nil:
		return badRequest(err)
	case te && (n >= 0 || !chunked || r.minor == 0):
		return badRequest(errors.New("unacceptable Transfer-Encoding"))
	case te:
		r.kind = bodyChunked
	case n > 0:
		r.kind, r.length = bodyFixed, n
	default:
		r.kind, r.length = bodyNone, max(n, 0)
	}
	return nil
}

func (r *request) parseConnection() {
	if r.minor == 0 {
		r.close = !r.has("Connection", "keep-alive")
	} else {
		r.close = r.has("Connection", "close")
	}
	r.expect = r.has("Expect", "100-continue")
	r.upgrade = r.has("Connection", "upgrade") && r.get("Upgrade") != nil
	r.creds = parseAuthorization(r.get("Authorization"))
}

// reset clears what routing set on the previous request.
func (r *request) reset() {
	r.answered100 = false
	r.rts = nil
	r.cookieBackend = ""
	r.setCookie = ""
	r.creds = credentials{}
}

// longPoll reports whether the request is one that a server holds open:
// ActiveSync Ping, MAPI NotificationWait, an RPC over HTTP channel.
func (r *request) longPoll() bool {
	switch r.service {
	case ActiveSync:
		return easCommand(r.query) == "Ping"
	case MAPI:
		return equalFold(r.get("X-RequestType"), "NotificationWait")
	case RPC:
		return isRPCMethod(r.method) && r.length >= minPDUBody
	}
	return false
}
