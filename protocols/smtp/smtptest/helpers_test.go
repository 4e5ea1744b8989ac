package smtptest

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"

	gosmtp "github.com/emersion/go-smtp"
)

// testTimeout bounds every connection a test opens.
const testTimeout = wiretest.Wait

// boundedConn never lets a deadline move past the one set at dial time, so a
// client library that resets deadlines (go-smtp sets minutes) stays bounded.
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

// dial connects to addr with every operation bounded by testTimeout.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := &boundedConn{Conn: nc, limit: time.Now().Add(testTimeout)}
	_ = c.SetDeadline(c.limit)
	t.Cleanup(func() { _ = nc.Close() })
	return c
}

// client opens a go-smtp client on a bounded connection to s.
func client(t *testing.T, s *Server) *gosmtp.Client {
	t.Helper()
	c := gosmtp.NewClient(dial(t, s.Addr))
	c.CommandTimeout = testTimeout
	c.SubmissionTimeout = testTimeout
	return c
}

// wire is a raw SMTP conversation for transcript tests.
type wire struct{ *wiretest.Conn }

func rawDial(t *testing.T, s *Server) *wire {
	t.Helper()
	return &wire{wiretest.NewConn(t, dial(t, s.Addr))}
}

// expect reads one reply and checks that its last line starts with prefix.
func (w *wire) expect(prefix string) []string {
	w.T.Helper()
	lines := w.Reply()
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, prefix) {
		w.T.Fatalf("reply %q, want one starting %q", lines, prefix)
	}
	return lines
}

// expectEOF checks that the server closed the connection with nothing more.
func (w *wire) expectEOF() {
	w.T.Helper()
	line, err := w.R.ReadString('\n')
	if err == nil || isTimeout(err) {
		w.T.Fatalf("read %q, %v; want the connection closed", line, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// assertGoroutinesGone fails if, shortly after Close, any goroutine still
// runs the server's, its listener's or go-smtp's code.
func assertGoroutinesGone(t *testing.T) {
	t.Helper()
	wiretest.GoroutinesGone(t, "smtptest.(*", "testserver.(*", "testserver.holdSilently", "go-smtp.(*")
}
