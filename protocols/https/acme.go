package https

import (
	"bytes"
	"net/http"
	"strconv"
	"time"
)

// acmePrefix is where ACME HTTP-01 challenges are fetched (RFC 8555
// section 8.3).
const acmePrefix = "/.well-known/acme-challenge/"

// serveACME answers an ACME HTTP-01 challenge on a plain listener with
// the Frontend's ACME handler, and reports whether it did.
func (s *session) serveACME(r *request) bool {
	h := s.f.ACME
	if h == nil || s.tls || !bytes.HasPrefix(r.path, []byte(acmePrefix)) || r.kind != bodyNone {
		return false
	}
	req, err := http.NewRequestWithContext(s.ctx, string(r.method), "http://"+hostOnly(r.get("Host"))+string(r.target), nil)
	if err != nil {
		return false
	}
	req.Host = string(r.get("Host"))
	req.RemoteAddr = s.raw.RemoteAddr().String()
	w := &recorder{header: http.Header{}, status: 200}
	h.ServeHTTP(w, req)
	s.wr().WriteString("HTTP/1.1 " + strconv.Itoa(w.status) + " " + http.StatusText(w.status) + "\r\n")
	w.header.Del("Content-Length")
	w.header.Del("Connection")
	w.header.Write(s.wr())
	s.wr().WriteString("Content-Length: " + strconv.Itoa(w.body.Len()) + "\r\n")
	s.connectionHeader(r, !r.close, false)
	s.wr().WriteString("\r\n")
	if string(r.method) != "HEAD" {
		s.wr().Write(w.body.Bytes())
	}
	s.wr().Flush()
	s.record(r, outcome{status: w.status, keep: !r.close}, time.Now())
	return true
}

// recorder is the http.ResponseWriter of serveACME: challenge answers are
// a few bytes, so the body is kept whole.
type recorder struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(status int) {
	if !w.wrote {
		w.status, w.wrote = status, true
	}
}

func (w *recorder) Write(p []byte) (int, error) {
	w.wrote = true
	if w.body.Len() > 64<<10 {
		return 0, http.ErrContentLength
	}
	return w.body.Write(p)
}
