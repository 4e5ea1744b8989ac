package exchangetest

import (
	"fmt"
	"html"
	"html/template"
	"net/http"
	"slices"
	"strings"
)

// vdirs are the virtual directories with a healthcheck.htm on Exchange
// 2013 SP1 and later.
var vdirs = []string{
	"owa", "ecp", "EWS", "Microsoft-Server-ActiveSync", "rpc", "mapi",
	"Autodiscover", "OAB", "PowerShell",
}

// VirtualDirectories returns the virtual directories that answer
// /<vdir>/healthcheck.htm, spelled as Exchange spells them.
func VirtualDirectories() []string { return slices.Clone(vdirs) }

// normalizeVdir turns "/EWS/" or "ews" into the key "ews".
func normalizeVdir(vdir string) string {
	return strings.ToLower(strings.Trim(vdir, "/"))
}

// healthcheckVdir returns the virtual directory of a health-check path,
// "/<vdir>/healthcheck.htm", matched without regard to case.
func healthcheckVdir(path string) (string, bool) {
	rest, isCheck := strings.CutSuffix(strings.ToLower(path), "/healthcheck.htm")
	vdir, rooted := strings.CutPrefix(rest, "/")
	if !isCheck || !rooted {
		return "", false
	}
	known := slices.ContainsFunc(vdirs, func(v string) bool { return strings.ToLower(v) == vdir })
	return vdir, known
}

var owaPage = template.Must(template.New("owa").Parse(`<!DOCTYPE html>
<html>
<head><title>Outlook on the web - {{.}}</title></head>
<body>
<h1>Outlook on the web</h1>
<p>Served by back-end <strong>{{.}}</strong>.</p>
</body>
</html>
`))

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	s.mu.Unlock()
	w.Header().Set("X-Backend", s.Name)
	s.logger().Debug("exchangetest: request", "backend", s.Name, "client", r.RemoteAddr,
		"method", r.Method, "path", r.URL.Path)

	path := strings.ToLower(r.URL.Path)
	if vdir, ok := healthcheckVdir(r.URL.Path); ok {
		s.healthcheck(w, vdir)
		return
	}
	if s.serveExtra(w, r) {
		return
	}
	if path == "/owa" || path == "/owa/" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := owaPage.Execute(w, s.Name); err != nil {
			s.logger().Debug("exchangetest: writing OWA page", "err", err)
		}
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "%s served %s\n", s.Name, r.URL.Path)
}

// healthcheck answers as Managed Availability does: 200 with the server's
// name while the protocol is up, 503 while it is down.
func (s *Server) healthcheck(w http.ResponseWriter, vdir string) {
	s.mu.Lock()
	down := s.down[vdir]
	s.mu.Unlock()
	w.Header().Set("Cache-Control", "no-cache, no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if down {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "503 Service Unavailable")
		return
	}
	fmt.Fprintf(w, "200 OK<br/>%s", html.EscapeString(s.Name))
}
