package exchangetest

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
)

// DemoUsers returns the demo's accounts: alice and bob, both with the
// password "demo".
func DemoUsers() map[string]string {
	return map[string]string{"alice": "demo", "bob": "demo"}
}

// loginVdirs are the virtual directories that ask for a login when Users
// is set, as Exchange's Windows authentication does.
var loginVdirs = []string{"ews", "rpc", "mapi"}

// connState is what one TCP connection has established: the NTLM
// challenge it was given and the user it proved. NTLM authenticates the
// connection, not the request ([MS-NTHT] section 1).
type connState struct {
	mu        sync.Mutex
	challenge []byte
	user      string
}

type connKey struct{}

// connContext gives each connection its own state, and counts it.
func (s *Server) connContext(ctx context.Context, _ net.Conn) context.Context {
	s.mu.Lock()
	s.conns++
	s.mu.Unlock()
	return context.WithValue(ctx, connKey{}, &connState{})
}

// Connections reports how many TCP connections the server has accepted.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func stateOf(r *http.Request) *connState {
	if st, ok := r.Context().Value(connKey{}).(*connState); ok {
		return st
	}
	return &connState{}
}

// needsLogin reports whether the request's virtual directory asks for a
// login.
func (s *Server) needsLogin(r *http.Request) bool {
	if s.users() == nil {
		return false
	}
	vdir, _, _ := strings.Cut(strings.TrimPrefix(strings.ToLower(r.URL.Path), "/"), "/")
	for _, v := range loginVdirs {
		if vdir == v {
			return true
		}
	}
	return false
}

func (s *Server) users() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Users == nil {
		return nil
	}
	return maps.Clone(s.Users)
}

// authenticate returns the request's user, or answers 401 itself: an NTLM
// or Negotiate handshake whose challenge holds only on the connection
// that received it, Basic on every request, or the user the connection
// already proved.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	st := stateOf(r)
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	switch strings.ToLower(scheme) {
	case "ntlm", "negotiate":
		return s.ntlm(w, st, scheme, token)
	case "basic":
		user, password, ok := r.BasicAuth()
		if want, known := lookupUser(s.users(), user); ok && known && want == password {
			return user, true
		}
		s.unauthorized(w, "wrong user or password")
		return "", false
	case "":
		st.mu.Lock()
		user := st.user
		st.mu.Unlock()
		if user != "" {
			return user, true
		}
	}
	s.unauthorized(w, "login required")
	return "", false
}

// ntlm runs one leg of the NTLM handshake.
func (s *Server) ntlm(w http.ResponseWriter, st *connState, scheme, token string) (string, bool) {
	m, typ, err := ntlmMessage(token)
	if err != nil {
		s.unauthorized(w, err.Error())
		return "", false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	switch typ {
	case 1:
		st.challenge, st.user = newChallenge(), ""
		w.Header()["WWW-Authenticate"] = []string{scheme + " " + b64(ntlmChallenge(st.challenge, s.Name))}
		w.WriteHeader(http.StatusUnauthorized)
		return "", false
	case 3:
		if st.challenge == nil {
			s.unauthorized(w, "AUTHENTICATE without a CHALLENGE on this connection")
			return "", false
		}
		user, err := ntlmVerify(m, st.challenge, s.users())
		st.challenge = nil
		if err != nil {
			s.unauthorized(w, err.Error())
			return "", false
		}
		st.user = user
		return user, true
	}
	s.unauthorized(w, fmt.Sprintf("unexpected NTLM message type %d", typ))
	return "", false
}

// unauthorized answers 401 offering the schemes Exchange offers, with the
// header name in the case IIS writes it.
func (s *Server) unauthorized(w http.ResponseWriter, why string) {
	w.Header()["WWW-Authenticate"] = []string{"Negotiate", "NTLM", `Basic realm="exchangetest"`}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprintf(w, "401 %s on %s\n", why, s.Name)
}
