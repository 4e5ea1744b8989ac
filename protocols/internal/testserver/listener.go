// Package testserver holds what the protocol test servers (pop3test,
// imaptest, smtptest) share: a listener that tracks every connection so
// that Close can end them all and that can hang connections instead of
// serving them, the once-only start and close of a server around it, and
// small helpers for stored messages and logs.
//
// It imports no gatehouse package; the test servers of the protocol
// packages import it.
package testserver

import (
	"io"
	"net"
	"sync"
)

// Listener stands between the socket and a protocol server. It counts and
// remembers every accepted connection so that CloseConns can end them all,
// and in hang mode keeps connections for itself so that the server never
// greets them.
type Listener struct {
	net.Listener
	// Wrap, when set, wraps each connection Accept returns, for example to
	// rewrite a greeting; the wrapper's Close must close the *Conn. Set it
	// before the first Accept.
	Wrap func(*Conn) net.Conn

	hang     bool
	mu       sync.Mutex
	conns    map[*Conn]struct{}
	accepted int
	closed   bool
	released sync.WaitGroup // one count per tracked conn, done when it is closed
}

// NewListener wraps ln; hang makes Accept hold every connection open
// without ever returning one.
func NewListener(ln net.Listener, hang bool) *Listener {
	return &Listener{Listener: ln, hang: hang, conns: make(map[*Conn]struct{})}
}

// Accept returns the next connection for the server. In hang mode it never
// returns one: each connection is drained in the background and held open.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := l.track(nc)
		switch {
		case c == nil:
		case l.hang:
			go holdSilently(c)
		case l.Wrap != nil:
			return l.Wrap(c), nil
		default:
			return c, nil
		}
	}
}

// holdSilently reads and discards what the client sends, never answering,
// until the client or CloseConns ends the connection.
func holdSilently(c *Conn) {
	_, _ = io.Copy(io.Discard, c)
	_ = c.Close()
}

// track wraps nc and remembers it; it returns nil (and closes nc) when the
// listener is already shutting down.
func (l *Listener) track(nc net.Conn) *Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = nc.Close()
		return nil
	}
	c := &Conn{Conn: nc, owner: l}
	l.conns[c] = struct{}{}
	l.accepted++
	l.released.Add(1)
	return c
}

func (l *Listener) forget(c *Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.released.Done()
}

// Sessions reports how many connections were accepted, hung ones included.
func (l *Listener) Sessions() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted
}

// CloseConns shuts every live socket and refuses connections accepted from
// now on. The owners of the connections (the server's handlers, hang
// readers) notice, end, and close their Conn, which releases it.
func (l *Listener) CloseConns() {
	l.mu.Lock()
	l.closed = true
	live := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		live = append(live, c)
	}
	l.mu.Unlock()
	for _, c := range live {
		_ = c.Conn.Close()
	}
}

// Wait blocks until every tracked connection has been closed by its owner.
func (l *Listener) Wait() { l.released.Wait() }

// Conn is an accepted connection that reports its closing to the Listener.
type Conn struct {
	net.Conn
	owner *Listener
	once  sync.Once
}

// Close closes the socket and releases the connection, once.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.owner.forget(c) })
	return err
}
