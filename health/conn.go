package health

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// farewellWait bounds the wait for the reply to a goodbye (QUIT, LOGOUT)
// sent after a failed step; the verdict is already known by then.
const farewellWait = time.Second

// attempt is one run of a probe against one address. It owns the
// connection, ties it to the probe's context (deadline and cancellation) and
// turns failures into *Error values prefixed with the probe's kind.
type attempt struct {
	ctx  context.Context
	kind string     // "smtp", "imap", ... as the error text begins
	addr string     // host:port as given
	raw  *boundConn // the TCP connection
	top  net.Conn   // what to close at the end: raw, or TLS over it
	stop func() bool
}

// begin dials addr with dial (nil: a net.Dialer) and binds the connection to
// ctx: its deadline becomes the connection's, and its end closes it.
func begin(ctx context.Context, kind string, dial func(context.Context, string, string) (net.Conn, error), addr string) (*attempt, error) {
	a := &attempt{ctx: ctx, kind: kind, addr: addr}
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, a.fail(StageConnect, "connect", err)
	}
	a.raw = &boundConn{Conn: conn}
	if d, ok := ctx.Deadline(); ok {
		a.raw.limit = d
		if err := conn.SetDeadline(d); err != nil {
			conn.Close()
			return nil, a.fail(StageConnect, "connect", fmt.Errorf("setting deadline: %w", err))
		}
	}
	a.top = a.raw
	a.stop = context.AfterFunc(ctx, func() { conn.Close() })
	return a, nil
}

// end closes the connection (sending a TLS close_notify where TLS runs).
func (a *attempt) end() {
	a.stop()
	a.top.Close()
	a.raw.Close()
}

// fail wraps err as the probe's verdict: a failure once the context has
// ended, or at the connection's deadline, is reported as a timeout during
// step; anything else keeps its stage.
func (a *attempt) fail(stage, step string, err error) error {
	if cause := a.timedOut(err); cause != nil {
		err = fmt.Errorf("during %s: %w", step, cause)
		stage = StageTimeout
	}
	return fmt.Errorf("%s: %w", a.kind, &Error{Stage: stage, Err: err})
}

// timedOut returns the context's error when err is the result of the
// probe's time running out, and nil otherwise.
func (a *attempt) timedOut(err error) error {
	if cerr := a.ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return nil
}

// handshake runs a TLS client handshake over the raw connection, naming the
// server after the probed host unless cfg names it.
func (a *attempt) handshake(cfg *stdtls.Config, name string) (*stdtls.Conn, error) {
	if name == "" {
		name = hostOf(a.addr)
	}
	cfg = clientConfig(cfg, name)
	tc := stdtls.Client(a.raw, cfg)
	if err := tc.HandshakeContext(a.ctx); err != nil {
		return nil, a.fail(StageTLS, "TLS handshake", fmt.Errorf("handshake with %s: %w", cfg.ServerName, err))
	}
	a.top = tc
	return tc, nil
}

// alive reports whether the server is still listening after err, so that a
// goodbye is worth sending: not after a timeout or a broken connection.
func (a *attempt) alive(err error) bool {
	if a.ctx.Err() != nil {
		return false
	}
	var ne net.Error
	return !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
		!errors.Is(err, net.ErrClosed) && !errors.As(err, &ne)
}

// clientConfig returns cfg with ServerName set (nil: verify against the
// system roots). cfg itself is never changed.
func clientConfig(cfg *stdtls.Config, name string) *stdtls.Config {
	if cfg == nil {
		return &stdtls.Config{ServerName: name}
	}
	if cfg.ServerName != "" {
		return cfg
	}
	cfg = cfg.Clone()
	cfg.ServerName = name
	return cfg
}

// hostOf returns the host part of a host:port address.
func hostOf(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// boundConn is a connection whose deadlines never reach past its probe's
// deadline, so that a library setting its own generous timeouts (go-smtp
// allows five minutes per command) still stops when the probe's time is up.
type boundConn struct {
	net.Conn
	limit time.Time // zero: no limit
}

// SetDeadline sets both deadlines, capped at the probe's deadline.
func (c *boundConn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.clamp(t)) }

// SetReadDeadline sets the read deadline, capped at the probe's deadline.
func (c *boundConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.clamp(t)) }

// SetWriteDeadline sets the write deadline, capped at the probe's deadline.
func (c *boundConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

// clamp caps t at the limit; a zero t (no deadline) becomes the limit.
func (c *boundConn) clamp(t time.Time) time.Time {
	if !c.limit.IsZero() && (t.IsZero() || t.After(c.limit)) {
		return c.limit
	}
	return t
}

// replyError is a server reply the probe did not want.
type replyError struct {
	what  string // "EHLO answered", "greeting was", ...
	reply string // the reply as received
	err   error  // the library's own error for it, if any
}

// Error returns the reply with control characters masked and length capped.
func (e *replyError) Error() string { return e.what + " " + clean(e.reply) }

// Unwrap returns the library's error, if any.
func (e *replyError) Unwrap() error { return e.err }

// clean makes text from the network safe for one log line: newlines become
// " / ", other control characters '?', and it stops after 200 bytes.
func clean(s string) string {
	const max = 200
	s = strings.ReplaceAll(strings.TrimRight(s, "\r\n"), "\n", " / ")
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c == 0x7f {
			b[i] = '?'
		}
	}
	if len(b) > max {
		return strings.ToValidUTF8(string(b[:max]), "") + "..."
	}
	return strings.ToValidUTF8(string(b), "?")
}
