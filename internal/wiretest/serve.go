package wiretest

import (
	"bytes"
	"context"
	"net"
	"os"
	"testing"
	"time"
)

// Server is what Serve runs: a proxy.Server, or anything shaped like one
// (wiretest does not import proxy, so proxy's own tests can use it).
type Server interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
}

// errServerClosedText is proxy.ErrServerClosed's text: Serve must return
// it once shut down (matched by text so wiretest need not import proxy).
var errServerClosedText = "proxy: server closed"

// Serve runs srv on 127.0.0.1:0 and returns its address. When the test
// ends, srv is shut down (bounded by Wait) and Serve must have returned
// the server-closed error.
func Serve(t testing.TB, srv Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Wait)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err == nil || err.Error() != errServerClosedText {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// ScriptConn is a client connection that sends a fixed script and records
// what the server answers: a fuzz target needs no sockets or timing. It
// comes from 192.0.2.7:51234 to 127.0.0.1 on LocalPort; deadlines are
// ignored.
type ScriptConn struct {
	In        *bytes.Reader
	Out       bytes.Buffer
	LocalPort int
}

// Script returns a connection that sends script to port localPort.
func Script(script []byte, localPort int) *ScriptConn {
	return &ScriptConn{In: bytes.NewReader(script), LocalPort: localPort}
}

// Read implements net.Conn: it reads the script.
func (c *ScriptConn) Read(b []byte) (int, error) { return c.In.Read(b) }

// Write implements net.Conn: it records the answer in Out.
func (c *ScriptConn) Write(b []byte) (int, error) { return c.Out.Write(b) }

// Close implements net.Conn; it does nothing.
func (c *ScriptConn) Close() error { return nil }

// LocalAddr implements net.Conn: 127.0.0.1 on LocalPort.
func (c *ScriptConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.LocalPort}
}

// RemoteAddr implements net.Conn: 192.0.2.7:51234.
func (c *ScriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 51234}
}

// SetDeadline implements net.Conn; it does nothing.
func (c *ScriptConn) SetDeadline(time.Time) error { return nil }

// SetReadDeadline implements net.Conn; it does nothing.
func (c *ScriptConn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline implements net.Conn; it does nothing.
func (c *ScriptConn) SetWriteDeadline(time.Time) error { return nil }

// WriteFile writes body to path or fails the test.
func WriteFile(t testing.TB, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FreeAddr returns an address on host (127.0.0.1 when none is given) whose
// port nobody listens on right now: for a dead back-end, or for a listener
// that must keep its address across reloads (port 0 binds anew each time).
func FreeAddr(t testing.TB, host ...string) string {
	t.Helper()
	h := "127.0.0.1"
	if len(host) > 0 {
		h = host[0]
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(h, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
