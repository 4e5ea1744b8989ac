package exchangetest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"net/http"
	"strings"
)

// Forms-based login as OWA does it on Exchange 2010: the logon page posts
// to /owa/auth.owa, which sets the session cookie "cadata" and redirects
// to /owa/. The cookie is signed with a key of this server alone, so
// another back-end does not accept it: OWA on such a farm needs the load
// balancer's cookie affinity.

var logonPage = template.Must(template.New("logon").Parse(`<!DOCTYPE html>
<html>
<head><title>Outlook - sign in - {{.}}</title></head>
<body>
<form id="logon" method="POST" action="/owa/auth.owa">
<input type="hidden" name="destination" value="/owa/">
<label>User <input id="username" name="username"></label>
<label>Password <input id="password" name="password" type="password"></label>
<button id="signin" type="submit">Sign in</button>
</form>
<p>Served by back-end <strong id="backend">{{.}}</strong>.</p>
</body>
</html>
`))

var mailboxPage = template.Must(template.New("mailbox").Parse(`<!DOCTYPE html>
<html>
<head><title>Mail - {{.User}} - Outlook</title></head>
<body>
<h1>Outlook on the web</h1>
<p>Signed in as <span id="user">{{.User}}</span>.</p>
<p>Served by back-end <strong id="backend">{{.Name}}</strong>.</p>
</body>
</html>
`))

// serveOWA answers OWA's paths when FormsAuth is on, and reports whether
// it did.
func (s *Server) serveOWA(w http.ResponseWriter, r *http.Request) bool {
	if !s.formsAuth() {
		return false
	}
	path := strings.ToLower(r.URL.Path)
	switch {
	case path == "/owa/auth/logon.aspx":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		logonPage.Execute(w, s.Name)
	case path == "/owa/auth.owa" && r.Method == http.MethodPost:
		s.formLogin(w, r)
	case path == "/owa" || path == "/owa/":
		user, ok := s.session(r)
		if !ok {
			http.Redirect(w, r, "/owa/auth/logon.aspx", http.StatusFound)
			return true
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache, no-store")
		mailboxPage.Execute(w, struct{ User, Name string }{user, s.Name})
	default:
		return false
	}
	return true
}

// formLogin checks the posted user and password and sets the session.
func (s *Server) formLogin(w http.ResponseWriter, r *http.Request) {
	user, password := r.PostFormValue("username"), r.PostFormValue("password")
	users := s.users()
	if users == nil {
		users = DemoUsers()
	}
	if want, ok := lookupUser(users, user); !ok || want != password {
		http.Redirect(w, r, "/owa/auth/logon.aspx?reason=2", http.StatusFound)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: "cadata", Value: s.sign(user), Path: "/", HttpOnly: true})
	http.Redirect(w, r, "/owa/", http.StatusFound)
}

// session returns the user of a valid session cookie of this server.
func (s *Server) session(r *http.Request) (string, bool) {
	c, err := r.Cookie("cadata")
	if err != nil {
		return "", false
	}
	i := strings.LastIndexByte(c.Value, '.')
	if i < 0 || !hmac.Equal([]byte(c.Value), []byte(s.sign(c.Value[:i]))) {
		return "", false
	}
	return c.Value[:i], true
}

// sign returns "user.signature" under this server's own key.
func (s *Server) sign(user string) string {
	s.mu.Lock()
	if s.sessionKey == nil {
		s.sessionKey = make([]byte, 32)
		rand.Read(s.sessionKey)
	}
	key := s.sessionKey
	s.mu.Unlock()
	m := hmac.New(sha256.New, key)
	m.Write([]byte(user))
	return user + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *Server) formsAuth() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.FormsAuth
}
