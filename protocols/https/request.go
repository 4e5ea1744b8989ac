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
	canon          string // the path as IIS resolves it, which chose the service
	minor          int    // HTTP/1.minor
	service        string
	kind           bodyKind
	length         int64 // Content-Length of a fixed body
	close          bool  // the client does not keep the connection
	expect         bool  // Expect: 100-continue
	upgrade        bool  // a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)
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
	if name := r.nominatedFraming(); name != "" {
		return badRequest(fmt.Errorf("Connection names %s", name))
	}
	r.parseConnection()
	return nil
}

// pinnedHeaders are the headers a Connection header may not remove: what
// frames the message and what routes it. Removing them from what is
// forwarded while using them here is how a request is smuggled past the
// back-end's parser (RFC 9110 section 7.6.1 lets a proxy refuse).
var pinnedHeaders = []string{"Content-Length", "Transfer-Encoding", "Host"}

// nominatedFraming returns the first pinned header a Connection header
// names, or "".
func (r *request) nominatedFraming() string {
	for _, name := range pinnedHeaders {
		if nominated(&r.head, []byte(name)) {
			return name
		}
	}
	return ""
}

// parseTarget accepts origin-form, "*" for OPTIONS and absolute-form
// (RFC 9112 section 3.2), which it reduces to origin-form.
func (r *request) parseTarget() error {
	t := r.target
	switch {
	case string(r.method) == "CONNECT":
		return &httpError{405, "Method Not Allowed", errors.New("CONNECT")}
	case string(t) == "*" && string(r.method) == "OPTIONS":
		r.path, r.query, r.canon = t, nil, "*"
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
	if !visible(r.target) {
		return badRequest(fmt.Errorf("control character in target %q", clip(r.target)))
	}
	r.path, r.query = splitTarget(r.target)
	canon, err := canonicalPath(r.path)
	if err != nil {
		return badRequest(err)
	}
	r.canon = canon
	if n := r.hostCount(); n > 1 || (r.minor >= 1 && n != 1) {
		return badRequest(errors.New("not exactly one Host"))
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

// visible reports whether b holds only visible ASCII and obs-text.
func visible(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// parseFraming finds how the body is delimited (RFC 9112 section 6.3),
// strictly, since the parser behind gatehouse (HTTP.sys) may read a
// lenient case otherwise: a Transfer-Encoding other than one header
// saying exactly "chunked" (so not "identity, chunked" nor "chunked,
// chunked"), one on HTTP/1.0, one with Content-Length, and anything but
// a single Content-Length value (repeated ones included) is refused.
func (r *request) parseFraming() error {
	te, chunked := r.requestTE()
	n, err := r.singleContentLength()
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
	r.upgrade = r.websocket()
	r.creds = parseAuthorization(r.get("Authorization"))
}

// websocket reports a WebSocket upgrade (RFC 6455 section 4.1): a GET
// without body on HTTP/1.1 whose one Upgrade header says websocket. Every
// other upgrade (h2c included) is not forwarded: the request goes on as
// plain HTTP/1.1, which RFC 9110 section 7.8 allows a server to do.
func (r *request) websocket() bool {
	if string(r.method) != "GET" || r.minor < 1 || r.kind != bodyNone || !r.has("Connection", "upgrade") {
		return false
	}
	n := 0
	var up []byte
	for _, f := range r.hdrs {
		if equalFold(f.name, "Upgrade") {
			n++
			up = f.value
		}
	}
	return n == 1 && equalFold(up, "websocket")
}

// requestTE reports whether the request has a Transfer-Encoding, and
// whether it is one header whose value is exactly chunked.
func (r *request) requestTE() (present, chunked bool) {
	n := 0
	var v []byte
	for _, f := range r.hdrs {
		if equalFold(f.name, "Transfer-Encoding") {
			n++
			v = f.value
		}
	}
	return n > 0, n == 1 && equalFold(v, "chunked")
}

// singleContentLength returns the request's Content-Length, -1 when
// absent; more than one value, equal or not, is refused.
func (r *request) singleContentLength() (int64, error) {
	n := int64(-1)
	for _, f := range r.hdrs {
		if !equalFold(f.name, "Content-Length") {
			continue
		}
		v, err := parseLength(f.value)
		if err != nil || n >= 0 {
			return 0, fmt.Errorf("%w: Content-Length %q", errMalformed, clip(f.value))
		}
		n = v
	}
	return n, nil
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
