package proxy

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// A burst is what one wake-up of a direction moves: everything queued on
// the source socket right now. Both Splice and parked sessions move bytes
// this way, so that neither holds a buffer or a pipe while it waits.
//
// A burst starts with a plain read into a pooled buffer, taken only once
// the kernel has bytes: most mail and HTTP exchanges are small, and
// read+write is then the cheapest move (HAProxy does the same). A read
// that fills the buffer means a stream; splice(2) then moves the rest of
// what is queued without copying it through user space.

// readBurst reads what is queued on src into a pooled buffer, waiting in
// the runtime's poller (up to src's read deadline) while nothing is. The
// buffer is taken only once the kernel has bytes; the caller puts it back.
// An EOF is io.EOF.
//
// The read and the wait must happen in one RawConn.Read call: each call
// starts by resetting the poller's readiness, so a wait in a second call
// could miss bytes that arrived after the first one's EAGAIN, and sleep
// until the next ones (the poller is edge-triggered).
func readBurst(rc syscall.RawConn) (bp *[]byte, n int, err error) {
	cerr := rc.Read(func(fd uintptr) bool {
		bp = bufPool.Get().(*[]byte)
		for {
			n, err = syscall.Read(int(fd), *bp)
			if err != syscall.EINTR {
				break
			}
		}
		if err == syscall.EAGAIN {
			bufPool.Put(bp)
			bp = nil
			return false // nothing yet: wait, holding no buffer
		}
		return true
	})
	if cerr != nil {
		err = cerr
	}
	if err != nil || n <= 0 {
		if bp != nil {
			bufPool.Put(bp)
		}
		if err == nil {
			err = io.EOF
		}
		return nil, 0, err
	}
	return bp, n, nil
}

// forward writes a burst's first bytes to dst and, when they filled the
// buffer (a stream), splices what else is queued on src. moved is told
// of every chunk.
func forward(dst, src *net.TCPConn, rc syscall.RawConn, first []byte, stream bool, moved func(int64)) error {
	n, err := dst.Write(first)
	moved(int64(n))
	if err != nil {
		return err
	}
	for stream {
		queued, eof, err := peekQueued(rc)
		if errors.Is(err, syscall.EAGAIN) || eof {
			return nil // the next burst reads again and sees the same
		}
		if err != nil {
			return err
		}
		n, err := dst.ReadFrom(&io.LimitedReader{R: src, N: int64(queued)})
		moved(n)
		if err != nil {
			return err
		}
	}
	return nil
}

// peekQueued asks the socket, without waiting, how many bytes are queued.
func peekQueued(rc syscall.RawConn) (queued int, eof bool, err error) {
	cerr := rc.Read(func(fd uintptr) bool {
		queued, eof, err = peek(int(fd))
		return true
	})
	if cerr != nil {
		return 0, false, cerr
	}
	return queued, eof, err
}
