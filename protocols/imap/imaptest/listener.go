package imaptest

import (
	"bytes"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
)

// readyText is the text go-imap puts after its greeting's capability code.
var readyText = []byte(" IMAP server ready\r\n")

// listener stands between the socket and go-imap. It counts and remembers
// every accepted connection so that Close can end them all, puts the server's
// name into the greeting, and in hang mode keeps connections for itself so
// that go-imap never greets them.
type listener struct {
	net.Listener
	hang     bool
	greeting []byte // replaces readyText in the first line written

	mu       sync.Mutex
	conns    map[*conn]struct{}
	accepted int
	closed   bool
	released sync.WaitGroup // one count per tracked conn, done when it is closed
}

func newListener(ln net.Listener, hang bool, name string) *listener {
	return &listener{
		Listener: ln,
		hang:     hang,
		greeting: []byte(" " + name + " IMAP server ready\r\n"),
		conns:    make(map[*conn]struct{}),
	}
}

// Accept returns the next connection for go-imap. In hang mode it never
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

// closeConns shuts every live socket. The owners of the connections (go-imap
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

// conn is an accepted connection that names the server in its greeting and
// reports its closing to the listener.
type conn struct {
	net.Conn
	owner *listener

	once    sync.Once
	greeted atomic.Bool
}

// Write sends p. The first write is go-imap's greeting, one whole line; its
// fixed text is replaced by one that carries the server's name.
func (c *conn) Write(p []byte) (int, error) {
	if c.greeted.Swap(true) || !bytes.HasSuffix(p, readyText) {
		return c.Conn.Write(p)
	}
	line := slices.Concat(bytes.TrimSuffix(p, readyText), c.owner.greeting) // p is not ours to modify
	if _, err := c.Conn.Write(line); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the socket and releases the connection, once.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.owner.forget(c) })
	return err
}
