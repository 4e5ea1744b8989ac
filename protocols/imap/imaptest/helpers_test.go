package imaptest

import (
	"net"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// boundedConn never lets a deadline move past the one set at dial time, so a
// client library that resets deadlines stays bounded.
type boundedConn struct {
	net.Conn
	limit time.Time
}

func (c *boundedConn) clamp(t time.Time) time.Time {
	if t.IsZero() || t.After(c.limit) {
		return c.limit
	}
	return t
}

func (c *boundedConn) SetDeadline(t time.Time) error     { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *boundedConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c *boundedConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

// dialConn connects to s with every operation bounded by wiretest.Wait.
func dialConn(t *testing.T, s *Server) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.Addr, wiretest.Wait)
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	c := &boundedConn{Conn: nc, limit: time.Now().Add(wiretest.Wait)}
	_ = c.SetDeadline(c.limit)
	t.Cleanup(func() { _ = nc.Close() })
	return c
}

// dial connects to s for a raw conversation.
func dial(t *testing.T, s *Server) *wiretest.Conn {
	t.Helper()
	return wiretest.NewConn(t, dialConn(t, s))
}

// assertGoroutinesGone fails if, shortly after Close, any goroutine still
// runs the server's or go-imap's server code.
func assertGoroutinesGone(t *testing.T) {
	t.Helper()
	wiretest.GoroutinesGone(t, "imaptest.(*", "testserver.(*", "testserver.holdSilently", "imapserver.(*")
}
