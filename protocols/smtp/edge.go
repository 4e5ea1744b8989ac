package smtp

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// edgeConn is the client's connection as the SMTP layers above it (go-smtp's
// server, the passthrough reader, and TLS between them) see it. It owns
// the read deadline while gatehouse talks SMTP: every read waits at most the
// timeout of the current stage (RFC 5321 section 4.5.3.2: a command, a
// block of data). And it can end the session between two commands: end
// makes the next read (or the one blocked now) write a last reply and
// report EOF, which go-smtp and the passthrough reader both take as the
// client leaving. That is how a 421 reaches an idle client at shutdown
// without two goroutines ever writing to the connection at once.
type edgeConn struct {
	net.Conn

	mu      sync.Mutex
	timeout time.Duration // read timeout of the current stage; 0 leaves deadlines alone
	helloBy time.Time     // when set, no read waits past it: the first HELO/EHLO is due
	ending  bool
	goodbye string
	// afterReply, when set, is the goodbye end is called with once the
	// next reply has been written.
	afterReply *string
	// top is the connection a goodbye is written to (TLS over this one
	// once the client started it); nil means this one. Only the goroutine
	// that reads sets and uses it.
	top func() net.Conn

	closeOnce sync.Once
	closed    chan struct{}
}

func newEdgeConn(c net.Conn, timeout time.Duration) *edgeConn {
	return &edgeConn{Conn: c, timeout: timeout, closed: make(chan struct{})}
}

// setTimeout sets the read timeout of the stage that begins.
func (c *edgeConn) setTimeout(d time.Duration) {
	c.mu.Lock()
	c.timeout = d
	c.mu.Unlock()
}

// expectHello bounds every read until helloDone by one deadline d from
// now: the client must say HELO or EHLO by then, whatever else it sends.
func (c *edgeConn) expectHello(d time.Duration) {
	c.mu.Lock()
	c.helloBy = time.Now().Add(d)
	c.mu.Unlock()
}

// helloDone lifts expectHello's deadline.
func (c *edgeConn) helloDone() {
	c.mu.Lock()
	c.helloBy = time.Time{}
	c.mu.Unlock()
}

// end makes the session end at its next read: goodbye (a whole reply with
// CRLF, or "") is written, then the reader sees EOF.
func (c *edgeConn) end(goodbye string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ending {
		return
	}
	c.ending, c.goodbye = true, goodbye
	c.Conn.SetReadDeadline(time.Now()) // wakes a read blocked now
}

// endAfterReply is end, deferred until the reply being prepared has been
// written: reads until then go on, so that go-smtp can still drain the
// rest of a refused message and the client reads its reply rather than a
// connection reset.
func (c *edgeConn) endAfterReply(goodbye string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.afterReply == nil {
		c.afterReply = &goodbye
	}
}

// Write writes to the client, and ends the session once a reply that was
// to be the last has gone out.
func (c *edgeConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	g := c.afterReply
	c.afterReply = nil
	c.mu.Unlock()
	if g != nil {
		c.end(*g)
	}
	return n, err
}

// Read reads from the client within the stage's timeout, or says goodbye.
func (c *edgeConn) Read(p []byte) (int, error) {
	if c.arm() {
		return 0, c.sayGoodbye()
	}
	n, err := c.Conn.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && c.isEnding() {
		return n, c.sayGoodbye()
	}
	return n, err
}

// arm sets the read deadline for one read, unless the session is ending.
// Holding mu makes end and arm exclusive: a deadline armed here can never
// overwrite the one end just set.
func (c *edgeConn) arm() (ending bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ending {
		return true
	}
	switch {
	case !c.helloBy.IsZero() && (c.timeout <= 0 || c.helloBy.Before(time.Now().Add(c.timeout))):
		c.Conn.SetReadDeadline(c.helloBy)
	case c.timeout > 0:
		c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	}
	return false
}

func (c *edgeConn) isEnding() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ending
}

// sayGoodbye writes the goodbye once and reports EOF.
func (c *edgeConn) sayGoodbye() error {
	c.mu.Lock()
	msg := c.goodbye
	c.goodbye = ""
	c.mu.Unlock()
	if msg != "" {
		w := c.Conn
		if c.top != nil {
			w = c.top()
		}
		c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(w, msg)
	}
	return io.EOF
}

// Close closes the connection and tells Done.
func (c *edgeConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { close(c.closed) })
	return err
}

// Done is closed once the connection is closed through edgeConn.
func (c *edgeConn) Done() <-chan struct{} { return c.closed }

// oneConnListener hands go-smtp's Server the one connection of a session:
// the first Accept returns it, the second blocks until it is closed and
// then reports the listener closed, which makes Serve return.
type oneConnListener struct {
	mu   sync.Mutex
	conn net.Conn
	done <-chan struct{} // the client's connection is closed
	tap  <-chan struct{} // go-smtp closed the tap (at STARTTLS)
	addr net.Addr
}

func newOneConnListener(c *edgeConn, tap *clientTap) *oneConnListener {
	return &oneConnListener{conn: tap, done: c.Done(), tap: tap.closed, addr: c.LocalAddr()}
}

// Accept implements net.Listener.
func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	select {
	case <-l.done:
	case <-l.tap:
	}
	return nil, net.ErrClosed
}

// Close implements net.Listener; the connection is go-smtp's to close.
func (l *oneConnListener) Close() error { return nil }

// Addr implements net.Listener.
func (l *oneConnListener) Addr() net.Addr { return l.addr }

// replayConn gives a reader bytes it already consumed from the connection
// once more, before the connection's own: go-smtp's client insists on
// reading a 220 greeting that gatehouse has already read.
type replayConn struct {
	net.Conn
	pending   []byte
	recording bool   // Read appends to rec
	rec       []byte // what was read since recording began
}

// Read implements net.Conn.
func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	n, err := c.Conn.Read(p)
	if c.recording && len(c.rec)+n <= maxReplyLine*4 {
		c.rec = append(c.rec, p[:n]...)
	}
	return n, err
}
