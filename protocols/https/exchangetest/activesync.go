package exchangetest

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"
)

// ActiveSync Ping ([MS-ASCMD] 2.2.1.13): the server holds the request
// until something changes or the heartbeat interval passes. This server
// never has changes, so it answers when the heartbeat ends (Status 1, "no
// changes") or drops the request when the client or the server goes away.

// defaultPingHold is how long a Ping is held when neither its body nor
// PingHold says.
const defaultPingHold = 10 * time.Second

var heartbeatRE = regexp.MustCompile(`<HeartbeatInterval>\s*(\d+)\s*</HeartbeatInterval>`)

// HeldPings returns how many ActiveSync Pings the server is holding now.
func (s *Server) HeldPings() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// isPing reports whether the request is an ActiveSync Ping, in the plain
// ("Cmd=Ping&…") or base64 query form ([MS-ASHTTP] 2.2.1.1.1.1, command
// code 18).
func isPing(r *http.Request) bool {
	if r.URL.Query().Get("Cmd") == "Ping" {
		return true
	}
	q, err := url.QueryUnescape(r.URL.RawQuery)
	if err != nil {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(q)
	return err == nil && len(b) > 1 && b[1] == 18
}

// servePing holds a Ping for its heartbeat: the HeartbeatInterval in the
// body (XML, in seconds), else PingHold.
func (s *Server) servePing(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	hold := s.pingHold()
	if m := heartbeatRE.FindSubmatch(body); m != nil {
		n, _ := strconv.Atoi(string(m[1]))
		hold = time.Duration(n) * time.Second
	}
	s.mu.Lock()
	s.held++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.held--
		s.mu.Unlock()
	}()
	t := time.NewTimer(hold)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header()["MS-Server-ActiveSync"] = []string{"15.1"}
	fmt.Fprintf(w, "<Ping><Status>1</Status><Server>%s</Server></Ping>\n", s.Name)
}

func (s *Server) pingHold() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.PingHold > 0 {
		return s.PingHold
	}
	return defaultPingHold
}
