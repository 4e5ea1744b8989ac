package dovecottest

import (
	"net/http"
	"net/http/httptest"
	"strings"
)

// AuthHTTP starts an auth_http endpoint (nginx's mail auth protocol) that
// answers lookups for protocol proto: each user in backends with the
// password "demo" goes to the "host:port" given, and anyone else is refused
// with Auth-Wait: 1. Closing the server early makes the lookup fail.
func AuthHTTP(proto string, backends map[string]string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr, ok := backends[r.Header.Get("Auth-User")]
		if !ok || r.Header.Get("Auth-Pass") != "demo" || r.Header.Get("Auth-Protocol") != proto {
			w.Header().Set("Auth-Status", "Invalid login or password")
			w.Header().Set("Auth-Wait", "1")
			return
		}
		host, port, _ := strings.Cut(addr, ":")
		w.Header().Set("Auth-Status", "OK")
		w.Header().Set("Auth-Server", host)
		w.Header().Set("Auth-Port", port)
	}))
}
