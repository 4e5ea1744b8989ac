package https

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// clock is the timing of one client connection, shared by it and its
// back-end connections: any byte moving either way on any of them is
// activity. A read or write fails once nothing has moved for idle, or when
// the hard deadline passes.
type clock struct {
	last atomic.Int64 // unix nanoseconds of the last byte moved
	idle atomic.Int64 // nanoseconds; 0 means no idle limit
	hard atomic.Int64 // unix nanoseconds; 0 means none
}

func (c *clock) touch() { c.last.Store(time.Now().UnixNano()) }

// setIdle changes the idle limit and counts from now.
func (c *clock) setIdle(d time.Duration) {
	c.idle.Store(int64(d))
	c.touch()
}

// setHard sets a deadline that no activity extends; zero time clears it.
func (c *clock) setHard(t time.Time) {
	if t.IsZero() {
		c.hard.Store(0)
		return
	}
	c.hard.Store(t.UnixNano())
}

// deadline is when an operation starting now would time out (0: never).
func (c *clock) deadline() int64 {
	var d int64
	if idle := c.idle.Load(); idle > 0 {
		d = c.last.Load() + idle
	}
	if h := c.hard.Load(); h > 0 && (d == 0 || h < d) {
		d = h
	}
	return d
}

// expired reports whether a deadline error is real: no activity within the
// idle limit, or the hard deadline passed. Otherwise the other direction
// moved bytes meanwhile and the operation goes on.
func (c *clock) expired() bool {
	d := c.deadline()
	return d != 0 && time.Now().UnixNano() >= d
}

// slack is how far the socket deadline may lag behind the clock before it
// is set again: setting it on every read would cost a timer update each.
const slack = int64(time.Second)

// timedConn applies a clock to a connection. Reads and writes may each
// run in their own goroutine, as net.Conn allows.
type timedConn struct {
	net.Conn
	c      *clock
	armedR int64
	armedW int64
}

func (t *timedConn) Read(p []byte) (int, error) {
	for {
		arm(&t.armedR, t.c.deadline(), t.Conn.SetReadDeadline)
		n, err := t.Conn.Read(p)
		if n > 0 {
			t.c.touch()
		}
		if n == 0 && isTimeout(err) && !t.c.expired() {
			t.armedR = 0 // the socket deadline passed: set it again
			continue
		}
		return n, err
	}
}

func (t *timedConn) Write(p []byte) (int, error) {
	var done int
	for {
		arm(&t.armedW, t.c.deadline(), t.Conn.SetWriteDeadline)
		n, err := t.Conn.Write(p[done:])
		if done += n; n > 0 {
			t.c.touch()
		}
		if isTimeout(err) && !t.c.expired() {
			t.armedW = 0
			continue
		}
		return done, err
	}
}

// arm sets the socket deadline when the wanted one moved by more than
// slack (or to or from none). A deadline set early is harmless: the
// operation retries while the clock says there was activity.
func arm(armed *int64, want int64, set func(time.Time) error) {
	cur := *armed
	if want == cur {
		return
	}
	if want != 0 && cur != 0 && want > cur && want-cur < slack {
		return
	}
	*armed = want
	if want == 0 {
		set(time.Time{})
		return
	}
	set(time.Unix(0, want))
}

func isTimeout(err error) bool {
	return err != nil && errors.Is(err, os.ErrDeadlineExceeded)
}

// alive reports whether a kept-alive back-end connection is still open.
// A plain HTTP back-end sends nothing between responses, so any byte (an
// IIS 408 before it closes, say) or the end means the connection is of no
// further use. Over TLS, records may legitimately wait (session tickets,
// key updates), so only the peer's end or an error counts there.
func alive(c net.Conn, plain bool) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	err = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		n, err := unix.Poll(fds, 0)
		switch ev := fds[0].Revents; {
		case err != nil:
		case n == 0:
			ok = true
		case ev&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0:
		default:
			ok = !plain // readable, not ended: TLS records in between
		}
	})
	return err == nil && ok
}

// waitReadable parks until the socket has bytes or its end queued, under
// the clock's deadlines, without reading anything and so without holding a
// buffer. It returns at once for connections that are not sockets.
func (t *timedConn) waitReadable() error {
	sc, ok := t.Conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	for {
		arm(&t.armedR, t.c.deadline(), t.Conn.SetReadDeadline)
		err := rc.Read(func(fd uintptr) bool {
			var b [1]byte
			_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			return !errors.Is(err, syscall.EAGAIN)
		})
		if err == nil || !isTimeout(err) || t.c.expired() {
			return err
		}
		t.armedR = 0
	}
}
