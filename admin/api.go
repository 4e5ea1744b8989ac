package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
)

// api serves /api/.
type api struct {
	srv           Server
	log           *slog.Logger
	authenticated bool // a token guards the listener
}

// apiError is the JSON body of a failed admin API call.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// status serves GET /api/status.
func (a *api) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Snapshot(a.srv))
}

// backendAction serves POST /api/backends/{name}/{action}.
func (a *api) backendAction(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), Action(r.PathValue("action"))
	if action.State() == "" {
		writeJSON(w, http.StatusNotFound, apiError{fmt.Sprintf("unknown action %q (drain, enable, disable)", action)})
		return
	}
	n, err := a.srv.SetBackendState(name, action)
	if err != nil {
		writeJSON(w, http.StatusNotFound, apiError{err.Error()})
		return
	}
	a.log.Warn("admin: back-end "+string(action), "backend", name, "pools", n, "from", r.RemoteAddr, "authenticated", a.authenticated)
	writeJSON(w, http.StatusOK, map[string]any{"backend": name, "state": action.State(), "pools": n})
}

// reload serves POST /api/reload.
func (a *api) reload(w http.ResponseWriter, r *http.Request) {
	a.log.Warn("admin: reload requested", "from", r.RemoteAddr)
	err := a.srv.Reload()
	switch {
	case errors.Is(err, ErrNoReload):
		writeJSON(w, http.StatusNotImplemented, apiError{err.Error()})
	case err != nil:
		writeJSON(w, http.StatusUnprocessableEntity, apiError{err.Error()})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"result": "reloaded"})
	}
}
