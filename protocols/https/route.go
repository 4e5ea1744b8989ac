package https

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strings"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// route is where one request should go: a back-end named outright (by an
// affinity cookie or the RPC channel table), else a hashing key, else the
// pool's balancing.
type route struct {
	prefer string // back-end name, or ""
	key    string // rendezvous key, or ""
}

// routeFor computes the request's route from its service's affinity.
func (s *session) routeFor(r *request) route {
	switch s.f.Config.service(r.service).Affinity {
	case AffinitySourceIP:
		return route{key: "ip:" + s.ip.String()}
	case AffinityCookie:
		return route{prefer: s.f.cookieBackend(r)}
	case AffinityActiveSyncUser:
		return route{key: activeSyncKey(r.query, r.creds.user)}
	case AffinityMAPIContext:
		if v := cookieValue(&r.head, "MapiContext"); len(v) > 0 {
			return route{key: "mapi:" + string(v)}
		}
	case AffinityRPCChannel:
		return s.rpcRoute(r)
	}
	return route{}
}

// rpcRoute keeps the two channels of a virtual connection on one back-end.
// With NTLM or Negotiate the back-end is fixed at the first, zero-length
// leg, before any PDU: both channels are then routed by what they share
// before authentication (the URL's server:port, and the OutlookSession
// cookie or else the client address). Otherwise the cookie of the first
// PDU routes them ([MS-RPCH] 3.2.4.5.6: a replacement channel goes where
// its virtual connection is).
func (s *session) rpcRoute(r *request) route {
	if r.rts != nil {
		return route{prefer: s.f.channels.lookup(r.rts.cookie), key: r.rts.key()}
	}
	who := string(cookieValue(&r.head, "OutlookSession"))
	if who == "" {
		who = s.ip.String()
	}
	return route{key: "rpc:" + strings.ToLower(string(r.query)) + "|" + who}
}

// order returns the back-ends of pool for a route, best first.
func order(pool *proxy.Pool, rt route) []*proxy.Backend {
	usable := pool.Usable()
	if rt.prefer != "" {
		for i, b := range usable {
			if b.Name == rt.prefer {
				return append([]*proxy.Backend{b}, append(usable[:i:i], usable[i+1:]...)...)
			}
		}
	}
	if rt.key != "" {
		return (&proxy.Rendezvous{}).Order(rt.key, usable)
	}
	return pool.Pick("")
}

// activeSyncKey returns "eas:user|device" from an ActiveSync query, plain
// ("Cmd=Ping&User=u&DeviceId=d&DeviceType=t") or base64-encoded
// ([MS-ASHTTP] 2.2.1.1.1.1); user falls back to the Basic user.
func activeSyncKey(query []byte, authUser string) string {
	user, device := "", ""
	if q, ok := decodeEASQuery(query); ok {
		user, device = q.user, q.device
	} else {
		v, _ := url.ParseQuery(string(query))
		user, device = v.Get("User"), v.Get("DeviceId")
	}
	if user == "" {
		user = authUser
	}
	if user == "" && device == "" {
		return ""
	}
	return "eas:" + strings.ToLower(user) + "|" + device
}

// easQuery is what gatehouse reads of a base64 ActiveSync query.
type easQuery struct {
	command byte
	device  string
	user    string
}

// ActiveSync command codes of the base64 query form.
const (
	easSync = 0
	easPing = 18
)

// decodeEASQuery parses the base64 query form: version, command, locale,
// device id, policy key, device type, then tagged parameters (tag 8 is
// User). A plain query ("Cmd=…&User=…") is not one.
func decodeEASQuery(query []byte) (easQuery, bool) {
	if len(query) == 0 || bytes.IndexByte(query, '&') >= 0 {
		return easQuery{}, false
	}
	s, err := url.QueryUnescape(string(query))
	if err != nil {
		return easQuery{}, false
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) < 5 || !easVersion(b[0]) {
		return easQuery{}, false
	}
	q := easQuery{command: b[1]}
	p := 4
	dev, p, ok := lenPrefixed(b, p)
	if !ok {
		return q, false
	}
	q.device = string(dev)
	if _, p, ok = lenPrefixed(b, p); !ok { // policy key
		return q, false
	}
	if _, p, ok = lenPrefixed(b, p); !ok { // device type
		return q, false
	}
	for p+2 <= len(b) {
		tag, n := b[p], int(b[p+1])
		if p+2+n > len(b) {
			return q, false
		}
		if tag == 8 {
			q.user = string(b[p+2 : p+2+n])
		}
		p += 2 + n
	}
	return q, true
}

// easVersion reports whether v is a protocol version of the base64 form
// (12.1, 14.0, 14.1, 16.0, 16.1, times ten).
func easVersion(v byte) bool {
	return v == 121 || v == 140 || v == 141 || v == 160 || v == 161
}

// lenPrefixed reads a one-byte length and that many bytes at p.
func lenPrefixed(b []byte, p int) ([]byte, int, bool) {
	if p >= len(b) {
		return nil, p, false
	}
	n := int(b[p])
	if p+1+n > len(b) {
		return nil, p, false
	}
	return b[p+1 : p+1+n], p + 1 + n, true
}

// easCommand returns the ActiveSync command of a query in either form.
func easCommand(query []byte) string {
	for rest := query; len(rest) > 0; {
		var kv []byte
		kv, rest, _ = bytes.Cut(rest, []byte("&"))
		if hasPrefixFold(kv, "cmd=") {
			return string(kv[4:])
		}
	}
	if q, ok := decodeEASQuery(query); ok {
		switch q.command {
		case easPing:
			return "Ping"
		case easSync:
			return "Sync"
		}
	}
	return ""
}

// cookieValue returns the value of the named cookie in the request's
// Cookie headers, or nil.
func cookieValue(h *head, name string) []byte {
	var found []byte
	eachCookie(h, name, func(v []byte) bool { found = v; return false })
	return found
}

// eachCookie calls fn with the value of each cookie named name until fn
// returns false.
func eachCookie(h *head, name string, fn func([]byte) bool) {
	for _, f := range h.hdrs {
		if !equalFold(f.name, "Cookie") {
			continue
		}
		for v := f.value; len(v) > 0; {
			var pair []byte
			pair, v, _ = bytes.Cut(v, []byte(";"))
			k, val, _ := bytes.Cut(bytes.TrimSpace(pair), []byte("="))
			if string(k) == name && !fn(bytes.Trim(val, `"`)) {
				return
			}
		}
	}
}

// cookieFor returns the signed affinity cookie value that names back-end
// for a service: HMAC-SHA256 over listener, service and back-end name,
// base64url, 128 bits. It reveals nothing of the back-end and cannot be
// forged to name one.
func (f *Frontend) cookieFor(service, backend string) string {
	k := service + "\x00" + backend
	if v, ok := f.cookieCache.Load(k); ok {
		return v.(string)
	}
	m := hmac.New(sha256.New, f.secret)
	m.Write([]byte(f.name() + "\x00" + k))
	v := base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
	f.cookieCache.Store(k, v)
	return v
}

// cookieBackend returns the back-end named by the request's valid
// affinity cookie for its service, or "".
func (f *Frontend) cookieBackend(r *request) string {
	pool := f.pool(r.service)
	var name string
	eachCookie(&r.head, f.Config.CookieName, func(v []byte) bool {
		for _, b := range pool.Backends {
			if hmac.Equal(v, []byte(f.cookieFor(r.service, b.Name))) {
				name = b.Name
				return false
			}
		}
		return true
	})
	return name
}

// cookiePath is the Path of a service's affinity cookie: its own
// virtual directory as the client spelled it, or "/" for the default
// service.
func cookiePath(r *request) string {
	if r.service == Default {
		return "/"
	}
	seg := r.path[1:]
	if i := bytes.IndexByte(seg, '/'); i >= 0 {
		seg = seg[:i]
	}
	return "/" + string(seg)
}
