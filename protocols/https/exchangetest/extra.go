package exchangetest

import (
	"fmt"
	"net/http"
	"strings"
)

// serveExtra answers what goes beyond pages and health checks: OWA's
// forms login, ActiveSync Ping, the login of EWS, RPC and MAPI, and RPC
// over HTTP channels. It reports whether it answered.
func (s *Server) serveExtra(w http.ResponseWriter, r *http.Request) bool {
	path := strings.ToLower(r.URL.Path)
	rpc := strings.HasPrefix(path, "/rpc/") && (r.Method == "RPC_IN_DATA" || r.Method == "RPC_OUT_DATA")
	switch {
	case s.serveOWA(w, r):
		return true
	case strings.HasPrefix(path, "/microsoft-server-activesync") && isPing(r):
		s.servePing(w, r)
		return true
	case s.needsLogin(r):
		user, ok := s.authenticate(w, r)
		if !ok {
			return true
		}
		w.Header().Set("X-User", user)
		if rpc {
			s.serveRPC(w, r, user)
			return true
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s served %s for %s\n", s.Name, r.URL.Path, user)
		return true
	case rpc:
		s.serveRPC(w, r, "")
		return true
	}
	return false
}
