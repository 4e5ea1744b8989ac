package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// parkedSplice joins two raw TCP sockets as Splice does, but returns at
// once: a direction holds a goroutine only while bytes flow, and while it
// idles its socket waits in the parker. done runs exactly once, when both
// directions have ended, with the byte counts and the first error (ErrIdle
// for the idle timeout, ctx's error when ctx ended it).
//
// States of a direction, and who ends it: running (its goroutine ends it on
// EOF or error), parked (whoever takes its resume function out of the
// parker: the parker's event, or an abort), ended.
type parkedSplice struct {
	p    *parker
	idle time.Duration
	last atomic.Int64 // unix nanoseconds of the last byte moved
	log  *slog.Logger

	legs      [2]*parkedLeg // up (client → back-end), down
	remaining atomic.Int32
	aborted   atomic.Bool
	timer     *time.Timer
	stopCtx   func() bool
	done      func(up, down int64, err error)

	mu       sync.Mutex
	err      error
	finished bool // the timer may not be armed again
}

// parkedLeg is one direction.
type parkedLeg struct {
	s        *parkedSplice
	src, dst *net.TCPConn
	rc       syscall.RawConn
	id       uint64
	added    bool // src is in the parker's epoll instance
	n        atomic.Int64
	ended    atomic.Bool
}

// splice registers both sockets and sets both directions running.
func (p *parker) splice(ctx context.Context, client, backend *net.TCPConn, idle time.Duration, log *slog.Logger,
	done func(up, down int64, err error)) (*parkedSplice, error) {
	s := &parkedSplice{p: p, idle: idle, log: log, done: done}
	s.last.Store(time.Now().UnixNano())
	up, err := s.newLeg(client, backend)
	if err != nil {
		return nil, err
	}
	down, err := s.newLeg(backend, client)
	if err != nil {
		return nil, err
	}
	s.legs = [2]*parkedLeg{up, down}
	s.remaining.Store(2)
	if idle > 0 {
		s.timer = time.AfterFunc(idle, s.checkIdle)
	}
	s.stopCtx = context.AfterFunc(ctx, func() { s.abort(ctx.Err()) })
	go up.resume()
	go down.resume()
	return s, nil
}

func (s *parkedSplice) newLeg(src, dst *net.TCPConn) (*parkedLeg, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &parkedLeg{s: s, src: src, dst: dst, rc: rc, id: s.p.newID()}, nil
}

// resume moves whatever is queued on src, then parks src again. It runs on
// a goroutine of its own, started by the parker or by splice.
//
// Each burst starts with a plain read into a pooled buffer: most bursts of
// mail and HTTP traffic are small, and read+write is then the cheapest
// move. A read that fills the buffer means a stream; splice(2) moves the
// rest of what is queued without copying it through user space.
func (l *parkedLeg) resume() {
	defer l.s.recoverLeg(l)
	if l.s.aborted.Load() {
		l.end()
		return
	}
	err := l.burst()
	if !l.s.aborted.Load() { // an abort's deadline must stay
		l.src.SetReadDeadline(time.Time{})
	}
	switch {
	case l.s.aborted.Load():
		l.end()
	case errors.Is(err, os.ErrDeadlineExceeded):
		l.park() // quiet for warmWait: wait in the parker, holding nothing
	case errors.Is(err, io.EOF):
		closeWrite(l.dst)
		l.end()
	default:
		l.s.abort(err) // the other direction cannot go on either
		l.end()
	}
}

// warmWait is how long a direction that just moved bytes waits for more
// in the runtime's own poller before it parks. Most exchanges (a reply, a
// close) come within it, and waiting there costs no epoll registration;
// kept short so that few goroutines wait at any time.
const warmWait = 50 * time.Millisecond

// burst moves what src delivers until it has been quiet for warmWait, or
// ends. It holds a pooled buffer only while bytes move.
func (l *parkedLeg) burst() error {
	moved := func(n int64) {
		l.n.Add(n)
		l.s.last.Store(time.Now().UnixNano())
	}
	for {
		if l.s.aborted.Load() {
			return nil
		}
		l.src.SetReadDeadline(time.Now().Add(warmWait))
		bp, n, err := readBurst(l.rc)
		if err != nil {
			return err
		}
		err = forward(l.dst, l.src, l.rc, (*bp)[:n], n == len(*bp), moved)
		bufPool.Put(bp)
		if err != nil {
			return err
		}
	}
}

// park hands src to the parker. An abort that raced with it finds the
// parked entry, or is seen here; exactly one of the two ends the leg.
func (l *parkedLeg) park() {
	var perr error
	// Set before arming: once armed, the next resume may run at once on
	// another goroutine.
	added := l.added
	l.added = true
	if err := l.rc.Control(func(fd uintptr) { perr = l.s.p.park(int(fd), l.id, added, l.resume) }); err != nil {
		perr = err
	}
	if perr != nil {
		l.s.abort(perr)
		l.end()
		return
	}
	if l.s.aborted.Load() && l.s.p.unpark(l.id) {
		l.end()
	}
}

// end marks the leg over; the last leg to end finishes the session.
func (l *parkedLeg) end() {
	if l.ended.Swap(true) {
		return
	}
	if l.s.remaining.Add(-1) == 0 {
		l.s.finish()
	}
}

// checkIdle ends the session when no byte moved for the idle time, else
// waits for the rest of it. It rearms the timer under the lock that
// finish takes, so a check that began as the splice finished cannot arm
// it again.
func (s *parkedSplice) checkIdle() {
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		return
	}
	since := time.Since(time.Unix(0, s.last.Load()))
	if since < s.idle {
		s.timer.Reset(s.idle - since)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.abort(ErrIdle)
}

// abort ends both directions: running ones see the flag or fail on the
// expired deadline, parked ones are taken out of the parker and ended here.
func (s *parkedSplice) abort(err error) {
	s.fail(err)
	if s.aborted.Swap(true) {
		return
	}
	now := time.Now()
	for _, l := range s.legs {
		l.src.SetDeadline(now)
	}
	for _, l := range s.legs {
		if s.p.unpark(l.id) {
			l.end()
		}
	}
}

// fail records the first error.
func (s *parkedSplice) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// finish runs once, after both legs ended.
func (s *parkedSplice) finish() {
	s.mu.Lock()
	s.finished = true
	if s.timer != nil {
		s.timer.Stop()
	}
	err := s.err
	s.mu.Unlock()
	s.stopCtx()
	s.done(s.legs[0].n.Load(), s.legs[1].n.Load(), err)
}

// recoverLeg is the last net for a panic in a direction: the session ends
// with a logged stack; the process and other sessions go on.
func (s *parkedSplice) recoverLeg(l *parkedLeg) {
	if v := recover(); v != nil {
		s.log.Error("splice panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		s.abort(fmt.Errorf("panic: %v", v))
		l.end()
	}
}
