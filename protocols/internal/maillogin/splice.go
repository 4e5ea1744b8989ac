package maillogin

import (
	"bufio"
	"errors"
	"net"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// splice forwards any bytes either side sent ahead of the login's answer,
// then pumps bytes until the session ends.
func (s *Session) splice(h *Handoff) {
	be := h.l.Conn
	defer be.Close()
	s.Raw.SetDeadline(time.Time{})
	be.SetDeadline(time.Time{})
	pool := s.f.Pool.Name
	up, err := forward(be, s.R)
	var down int64
	if err == nil {
		down, err = forward(s.Conn, h.l.R)
	}
	outcome := "ok"
	if err == nil {
		release := proxy.TrackSession(pool, h.b, s.ender(be))
		var u, d int64
		u, d, err = proxy.Splice(s.Ctx, s.Conn, be, s.f.Idle)
		release()
		up, down = up+u, down+d
	}
	switch {
	case errors.Is(err, proxy.ErrIdle):
		outcome = "idle_timeout"
	case err != nil:
		outcome = "error"
	}
	proxy.CountBytes(pool, h.b.Name, up, down)
	s.Log.Info("session", "user", h.user, "backend", h.b.Name, "up", up, "down", down,
		"duration", time.Since(h.start).Round(time.Millisecond), "outcome", outcome)
}

// forward writes what r has buffered to w, so that bytes read ahead of the
// splice reach the other side first and in order.
func forward(w net.Conn, r *bufio.Reader) (int64, error) {
	n := r.Buffered()
	if n == 0 {
		return 0, nil
	}
	b, _ := r.Peek(n)
	m, err := w.Write(b)
	return int64(m), err
}

// closerFunc is a func with the Close method Backend.Track wants.
type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// ender returns what ends the session from outside: the protocol's
// goodbye to the client, then the back-end connection closed, which ends
// the splice.
func (s *Session) ender(be net.Conn) closerFunc {
	return func() error {
		if s.f.Goodbye != "" {
			s.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			s.Conn.Write([]byte(s.f.Goodbye))
		}
		return be.Close()
	}
}
