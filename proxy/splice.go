//go:build linux

package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Splice pumps bytes both ways between client and backend until both
// directions have ended, no byte has moved either way for idle (0 means no
// idle limit), or ctx is done. When one side ends its half (EOF), Splice
// half-closes the other side's write half and keeps the other direction
// running. It closes neither connection; the caller does. up counts bytes
// from client to backend, down from backend to client.
//
// Between two TCP sockets the bytes never enter user space (splice(2)), and
// an idle connection holds no buffer and no pipe: each direction parks in
// the runtime's poller until the kernel says bytes are waiting, then moves
// exactly what is queued. That is what keeps thousands of idle ActiveSync
// and IMAP IDLE sessions cheap.
func Splice(ctx context.Context, client, backend net.Conn, idle time.Duration) (up, down int64, err error) {
	s := &splicer{idle: idle}
	s.touch()
	stop := context.AfterFunc(ctx, func() { s.abort(client, backend, ctx.Err()) })
	defer stop()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		down = s.pumpDown(client, backend)
	}()
	up = s.pumpUp(backend, client)
	wg.Wait()
	return up, down, s.firstErr()
}

// splicer is the state both directions of one Splice share.
type splicer struct {
	idle time.Duration
	last atomic.Int64 // unix nanoseconds of the last byte moved either way
	// aborted is set before abort's deadlines, so that neither direction
	// takes them for an idle wait and re-arms past them.
	aborted atomic.Bool

	mu  sync.Mutex
	err error
}

func (s *splicer) touch() { s.last.Store(time.Now().UnixNano()) }

// pumpUp and pumpDown are the two directions; they exist under their own
// names so that a goroutine dump tells them apart.
func (s *splicer) pumpUp(dst, src net.Conn) int64   { return s.pump(dst, src) }
func (s *splicer) pumpDown(dst, src net.Conn) int64 { return s.pump(dst, src) }

// pump copies src to dst until EOF or an error; on EOF it half-closes dst,
// on an error it aborts both so the other direction ends too.
func (s *splicer) pump(dst, src net.Conn) int64 {
	var n int64
	var err error
	st, dt := rawTCP(src), rawTCP(dst)
	if st != nil && dt != nil {
		n, err = s.spliceTCP(dt, st)
	} else {
		n, err = s.copyBuffered(dst, src)
	}
	if err != nil {
		s.abort(src, dst, err)
		return n
	}
	closeWrite(dst)
	return n
}

// spliceTCP moves bytes between two TCP sockets in bursts (see
// burst_linux.go): wait until src is readable without holding anything,
// then move exactly what is queued.
func (s *splicer) spliceTCP(dst, src *net.TCPConn) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	moved := func(n int64) {
		total += n
		s.touch()
	}
	for {
		s.armDeadline(src)
		bp, n, err := readBurst(rc)
		switch {
		case err == io.EOF:
			return total, nil
		case err != nil && s.stillActive(err):
			continue // only this direction idled; the other moved bytes
		case err != nil:
			return total, err
		}
		err = forward(dst, src, rc, (*bp)[:n], n == len(*bp), moved)
		bufPool.Put(bp)
		if err != nil {
			return total, err
		}
	}
}

// copyBuffered is the path for connections that are not plain TCP (TLS at
// the edge): a pooled buffer, taken only while bytes flow.
func (s *splicer) copyBuffered(dst, src net.Conn) (int64, error) {
	var total int64
	for {
		s.armDeadline(src)
		bp := bufPool.Get().(*[]byte)
		nr, rerr := src.Read(*bp)
		if nr > 0 {
			s.touch()
			nw, werr := dst.Write((*bp)[:nr])
			total += int64(nw)
			if werr != nil {
				bufPool.Put(bp)
				return total, werr
			}
		}
		bufPool.Put(bp)
		switch {
		case rerr == io.EOF:
			return total, nil
		case rerr != nil && !s.stillActive(rerr):
			return total, rerr
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// armDeadline sets src's read deadline to the idle limit after the last
// byte moved in either direction.
func (s *splicer) armDeadline(src net.Conn) {
	if s.idle <= 0 {
		return
	}
	src.SetReadDeadline(time.Unix(0, s.last.Load()).Add(s.idle))
	if s.aborted.Load() {
		src.SetReadDeadline(time.Now())
	}
}

// stillActive reports whether err is a read deadline that expired only for
// this direction while the other one moved bytes: then the wait goes on.
func (s *splicer) stillActive(err error) bool {
	if s.idle <= 0 || s.aborted.Load() || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	return time.Since(time.Unix(0, s.last.Load())) < s.idle
}

// abort records the first error and unblocks both directions.
func (s *splicer) abort(a, b net.Conn, err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.aborted.Store(true)
	now := time.Now()
	a.SetDeadline(now)
	b.SetDeadline(now)
}

func (s *splicer) firstErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if errors.Is(s.err, os.ErrDeadlineExceeded) {
		return ErrIdle
	}
	return s.err
}

// ErrIdle is returned by Splice when the idle timeout ended the session.
var ErrIdle = errors.New("idle timeout")

// closeWrite half-closes c's write side when it can, else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// rawTCP returns the *net.TCPConn under c when c is one or wraps one without
// buffering (ClientConn), else nil.
func rawTCP(c net.Conn) *net.TCPConn {
	switch t := c.(type) {
	case *net.TCPConn:
		return t
	case *ClientConn:
		return t.TCPConn
	}
	return nil
}
