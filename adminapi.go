package gatehouse

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// Admin actions on a back-end, as the API's paths name them.
var adminActions = map[string]proxy.AdminState{
	"drain":   proxy.Draining,
	"enable":  proxy.Enabled,
	"disable": proxy.Disabled,
}

// apiError is the JSON body of a failed admin API call.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// requireToken wraps the admin API in bearer-token authentication when a
// token is configured; the comparison takes constant time.
func (s *Server) requireToken(next http.Handler) http.Handler {
	token := s.cfg.Admin.Token
	if token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			s.log.Warn("admin API refused: bad or missing token", "from", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse"`)
			writeJSON(w, http.StatusUnauthorized, apiError{"a valid bearer token is required"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// handleBackendAction serves POST /api/backends/{name}/{action}.
func (s *Server) handleBackendAction(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), r.PathValue("action")
	state, ok := adminActions[action]
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{fmt.Sprintf("unknown action %q (drain, enable, disable)", action)})
		return
	}
	n, err := s.SetBackendState(name, state)
	if err != nil {
		writeJSON(w, http.StatusNotFound, apiError{err.Error()})
		return
	}
	s.log.Warn("admin: back-end "+action, "backend", name, "pools", n, "from", r.RemoteAddr, "authenticated", s.config().Admin.Token != "")
	writeJSON(w, http.StatusOK, map[string]any{"backend": name, "state": state.String(), "pools": n})
}

// SetBackendState sets an operator state on every pool's back-end of that
// name and returns how many it changed. Disabled back-ends' live sessions
// are closed after the admin disable grace period, unless the back-end is
// enabled again meanwhile.
func (s *Server) SetBackendState(name string, state proxy.AdminState) (int, error) {
	s.mu.Lock()
	s.adminStates[name] = state
	var hit []*proxy.Backend
	for key, be := range s.backends {
		if key.name == name {
			be.SetAdmin(state)
			hit = append(hit, be)
		}
	}
	s.mu.Unlock()
	if len(hit) == 0 {
		return 0, errors.New("no back-end named " + name)
	}
	s.changes.add(Change{At: time.Now(), Backend: name, State: stateWord(state), Reason: "operator"})
	if state == proxy.Disabled {
		time.AfterFunc(s.config().Admin.DisableGrace, func() { s.closeDisabled(hit) })
	}
	return len(hit), nil
}

// closeDisabled closes the live sessions of back-ends still disabled.
func (s *Server) closeDisabled(bs []*proxy.Backend) {
	for _, b := range bs {
		if b.Admin() == proxy.Disabled {
			if n := b.CloseSessions(); n > 0 {
				s.log.Warn("closed sessions of a disabled back-end", "backend", b.Name, "sessions", n)
			}
		}
	}
}

func stateWord(s proxy.AdminState) string {
	if s == proxy.Enabled {
		return "enabled"
	}
	return s.String()
}

// handleReload serves POST /api/reload.
func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if s.reload == nil {
		writeJSON(w, http.StatusNotImplemented, apiError{"this server was not started from a configuration file"})
		return
	}
	s.log.Warn("admin: reload requested", "from", r.RemoteAddr)
	if err := s.reload(); err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, apiError{err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": "reloaded"})
}
