package smtptest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// listener stands between the socket and go-smtp. It counts and remembers
// every accepted connection so that Close can end them all, and in hang mode
// it keeps connections for itself so that go-smtp never greets them.
type listener struct {
	net.Listener
	hang bool

	mu       sync.Mutex
	conns    map[*conn]struct{}
	accepted int
	closed   bool
	released sync.WaitGroup // one count per tracked conn, done when it is closed
}

func newListener(ln net.Listener, hang bool) *listener {
	return &listener{Listener: ln, hang: hang, conns: make(map[*conn]struct{})}
}

// Accept returns the next connection for go-smtp. In hang mode it never
// returns one: each connection is drained in the background and held open.
func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := l.track(nc)
		if c == nil {
			continue
		}
		if !l.hang {
			return c, nil
		}
		go holdSilently(c)
	}
}

// holdSilently reads and discards what the client sends, never answering,
// until the client or Close ends the connection.
func holdSilently(c *conn) {
	_, _ = io.Copy(io.Discard, c)
	_ = c.Close()
}

// track wraps nc and remembers it; it returns nil (and closes nc) when the
// listener is already shutting down.
func (l *listener) track(nc net.Conn) *conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = nc.Close()
		return nil
	}
	c := &conn{Conn: nc, owner: l}
	l.conns[c] = struct{}{}
	l.accepted++
	l.released.Add(1)
	return c
}

func (l *listener) forget(c *conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.released.Done()
}

// sessions reports how many connections were accepted.
func (l *listener) sessions() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted
}

// closeConns shuts every live socket. The owners of the connections (go-smtp
// handlers, hang readers) notice, end, and close their conn, which releases it.
func (l *listener) closeConns() {
	l.mu.Lock()
	l.closed = true
	live := make([]*conn, 0, len(l.conns))
	for c := range l.conns {
		live = append(live, c)
	}
	l.mu.Unlock()
	for _, c := range live {
		_ = c.Conn.Close()
	}
}

// wait blocks until every tracked connection has been closed by its owner.
func (l *listener) wait() { l.released.Wait() }

// conn is an accepted connection that reports its closing to the listener.
type conn struct {
	net.Conn
	owner *listener

	once sync.Once
	// closeAfterWrite makes the next Write the last: go-smtp writes each reply
	// with a single Write, so the reply reaches the client and then the
	// connection ends, as a server does after a 421 reply.
	closeAfterWrite atomic.Bool
}

// Write sends p, then closes the connection if a closing reply was due.
func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.closeAfterWrite.Load() {
		_ = c.Close()
	}
	return n, err
}

// Close closes the socket and releases the connection, once.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.owner.forget(c) })
	return err
}
