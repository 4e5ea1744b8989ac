package smtptest

import (
	"net"
	"sync/atomic"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/testserver"
)

// conn is an accepted connection that can end itself right after a reply.
type conn struct {
	*testserver.Conn
	// closeAfterWrite makes the next Write the last: go-smtp writes each reply
	// with a single Write, so the reply reaches the client and then the
	// connection ends, as a server does after a 421 reply.
	closeAfterWrite atomic.Bool
}

// wrapConn is the testserver.Listener Wrap that lets a session close its
// connection after a reply (see closeAfterReply).
func wrapConn(c *testserver.Conn) net.Conn { return &conn{Conn: c} }

// Write sends p, then closes the connection if a closing reply was due.
func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.closeAfterWrite.Load() {
		_ = c.Close()
	}
	return n, err
}
