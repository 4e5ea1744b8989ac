//go:build linux

package proxy

import (
	"net"
	"sync"

	"github.com/pires/go-proxyproto"
)

// ClientConn is an accepted client connection: the raw TCP socket, kept raw
// so Splice can use splice(2), and the client's real address.
type ClientConn struct {
	*net.TCPConn
	// Header is the PROXY header a trusted upstream sent, or nil.
	Header *proxyproto.Header
	remote net.Addr

	cleanup   []func() // what ends the session, in order of adding
	handedOff bool
	ended     sync.Once
}

// RemoteAddr returns the client's address: the PROXY header's source when
// a trusted upstream sent one, else the socket's peer.
func (c *ClientConn) RemoteAddr() net.Addr { return c.remote }

// HandOff lets a handler return from ServeConn while its session goes on
// without a goroutine of its own (a parked splice). The Server then keeps
// the connection open and counted; end, which must be called exactly once
// when the session is over, closes it and does the Server's bookkeeping.
func (c *ClientConn) HandOff() (end func()) {
	c.handedOff = true
	return c.end
}

// atEnd adds f to what ends the session, run in reverse order of adding.
func (c *ClientConn) atEnd(f func()) { c.cleanup = append(c.cleanup, f) }

// end runs the cleanup once, however often it is called: after a panic
// the Server ends a handed-off session itself, and the part it was handed
// to may still call end later.
func (c *ClientConn) end() {
	c.ended.Do(func() {
		for i := len(c.cleanup) - 1; i >= 0; i-- {
			c.cleanup[i]()
		}
		c.cleanup = nil
	})
}

// endUnlessHandedOff ends the session when ServeConn returns, unless the
// handler handed it off.
func (c *ClientConn) endUnlessHandedOff() {
	if !c.handedOff {
		c.end()
	}
}
