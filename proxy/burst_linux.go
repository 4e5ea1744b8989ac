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

// readQueued reads what is queued on src without waiting. It returns the
// pooled buffer holding the bytes (nil with an error or EOF); the caller
// puts it back. EAGAIN means nothing is queued.
func readQueued(rc syscall.RawConn) (bp *[]byte, n int, err error) {
	cerr := rc.Read(func(fd uintptr) bool {
		bp = bufPool.Get().(*[]byte)
		for {
			n, err = syscall.Read(int(fd), *bp)
			if err != syscall.EINTR {
				break
			}
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

// waitReadable parks the goroutine in the runtime's poller until src has
// bytes (or EOF, or an error), honouring src's read deadline. It reads
// nothing.
func waitReadable(rc syscall.RawConn) error {
	waited := false
	return rc.Read(func(uintptr) bool {
		if waited {
			return true
		}
		waited = true
		return false
	})
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
