package imaptest

import (
	"bytes"
	"net"
	"slices"
	"sync/atomic"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/testserver"
)

// readyText is the text go-imap puts after its greeting's capability code.
var readyText = []byte(" IMAP server ready\r\n")

// namingConn is an accepted connection that names the server in its
// greeting.
type namingConn struct {
	*testserver.Conn
	greeting []byte // replaces readyText in the first line written
	greeted  atomic.Bool
}

// namedGreeting returns a testserver.Listener Wrap that puts name into the
// greeting.
func namedGreeting(name string) func(*testserver.Conn) net.Conn {
	greeting := []byte(" " + name + " IMAP server ready\r\n")
	return func(c *testserver.Conn) net.Conn { return &namingConn{Conn: c, greeting: greeting} }
}

// Write sends p. The first write is go-imap's greeting, one whole line; its
// fixed text is replaced by one that carries the server's name.
func (c *namingConn) Write(p []byte) (int, error) {
	if c.greeted.Swap(true) || !bytes.HasSuffix(p, readyText) {
		return c.Conn.Write(p)
	}
	line := slices.Concat(bytes.TrimSuffix(p, readyText), c.greeting) // p is not ours to modify
	if _, err := c.Conn.Write(line); err != nil {
		return 0, err
	}
	return len(p), nil
}
