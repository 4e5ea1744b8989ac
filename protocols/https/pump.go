package https

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// bodyPump sends a request body to the back-end while the response comes
// back. For an RPC channel or a MAPI NotificationWait it then watches the
// client connection, so that a client that goes away ends the exchange at
// once instead of leaving the back-end holding its request. ActiveSync
// Pings are not watched: a phone that vanishes from the network sends no
// FIN to notice, and a watcher per held Ping would cost more memory than
// the Ping itself; a Ping whose client left ends when the back-end
// answers it.
type bodyPump struct {
	done chan struct{} // closed when finished; nil when there is no goroutine
	n    int64
	err  error
	rts  *rts        // the channel's first PDU, when seen on the way
	sent atomic.Bool // the whole body reached the back-end
	// malformed: the client's chunked body could not be delimited; the
	// back-end connection was cut so that its half-framed request is
	// never followed by another.
	malformed atomic.Bool

	mu       sync.Mutex
	watching bool // watching the client for its close
	stopping bool // the response is over: do not start watching
}

// sendBody starts sending the request body: inline when it is all
// buffered already, else in a goroutine. An RPC channel's first PDU is
// looked at on the way, to count channel pairs.
func (s *session) sendBody(u *upstream, r *request) *bodyPump {
	p := &bodyPump{}
	observe := r.rts == nil && r.service == RPC && isRPCMethod(r.method) && r.length >= minPDUBody
	watch := r.longPoll() && r.service != ActiveSync
	switch {
	case r.kind == bodyNone:
		p.err = u.wr().Flush()
		p.sent.Store(p.err == nil)
		u.releaseWriter()
	case !observe && r.kind == bodyFixed && r.length <= int64(s.rd().Buffered()):
		p.copy(s, u, r)
	default:
		p.done = make(chan struct{})
		go p.run(s, u, r, observe, watch)
		return p
	}
	if watch && p.err == nil {
		p.done = make(chan struct{})
		go p.watch(s)
	}
	return p
}

func (p *bodyPump) run(s *session, u *upstream, r *request, observe, watch bool) {
	if observe {
		if p.err = u.wr().Flush(); p.err != nil {
			s.abort()
			close(p.done)
			return
		}
		if c, ok := peekRTS(s.rd(), r.method, r.length); ok {
			p.rts = &c
			s.countPair(s.f.channels.attach(c, u.b.Name))
		}
	}
	p.copy(s, u, r)
	switch {
	case p.malformed.Load():
		// Cut the back-end short (its reader then fails, and the session
		// drops it); the client is still there to be told.
		u.raw.Close()
	case p.err != nil:
		// A client gone mid-body, or a back-end that stopped reading: the
		// response will not come or cannot be delivered.
		s.abort()
	}
	if p.err != nil || !watch {
		close(p.done)
		return
	}
	p.watch(s)
}

func (p *bodyPump) copy(s *session, u *upstream, r *request) {
	switch r.kind {
	case bodyFixed:
		p.n, p.err = copyFixed(u.wr(), s.rd(), r.length)
	case bodyChunked:
		p.n, p.err = copyChunked(u.wr(), s.rd())
		p.malformed.Store(errors.Is(p.err, errChunk))
	}
	if p.err == nil {
		p.err = u.wr().Flush()
	}
	p.sent.Store(p.err == nil)
	u.releaseWriter()
}

// watch waits for the client connection to end while the response is
// pending, and aborts the exchange when it does. A pipelined request's
// bytes stay buffered for the session.
func (p *bodyPump) watch(s *session) {
	defer close(p.done)
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return
	}
	p.watching = true
	p.mu.Unlock()
	err := s.awaitClient()
	p.mu.Lock()
	stopped := p.stopping
	p.mu.Unlock()
	if err != nil && !stopped {
		s.abort()
	}
}

// awaitClient waits for the client to send or go, holding no buffer
// while it waits (a pipelined request already buffered ends the wait).
func (s *session) awaitClient() error {
	if s.br != nil && s.br.Buffered() > 0 {
		return nil
	}
	s.releaseReader()
	if err := s.timed.waitReadable(); err != nil {
		return err
	}
	_, err := s.rd().Peek(1)
	return err
}

// stopWatch ends the watch once the response is over; it reports whether
// the watch had to be interrupted.
func (p *bodyPump) stopWatch(s *session) bool {
	p.mu.Lock()
	p.stopping = true
	w := p.watching
	p.mu.Unlock()
	if w {
		s.interruptRead()
	}
	return w
}

// finishBody waits for the body pump. A back-end may answer before it has
// the whole body (an error, a 401): the rest gets a second to arrive,
// then both connections are given up, since neither is in step any more.
func (s *session) finishBody(u *upstream, x *outcome, p *bodyPump) {
	if p.done != nil {
		interrupted := p.stopWatch(s)
		if !interrupted && !waitClosed(p.done, time.Second) {
			s.interruptRead()
			p.err = errors.New("request body unfinished when the response ended")
		}
		<-p.done
		s.clk.setHard(time.Time{})
	}
	x.up += p.n
	if p.rts != nil {
		s.f.channels.detach(*p.rts)
	}
	if p.err != nil {
		x.keep = false
		x.partial = true
		u.broken = true
		if x.err == nil {
			x.err, x.reason = fmt.Errorf("request body: %w", p.err), "aborted"
		}
	}
}

// waitClosed waits up to d for ch to close.
func waitClosed(ch chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// interruptRead makes a read of the client connection in progress return.
func (s *session) interruptRead() {
	s.clk.setHard(time.Now())
	s.raw.SetReadDeadline(time.Now())
}

// abort ends every read and write of the session at once: the client is
// gone, or the server is closing.
func (s *session) abort() {
	now := time.Now()
	s.aborted.Store(true)
	s.clk.setHard(now)
	s.raw.SetDeadline(now)
	if u := s.cur.Load(); u != nil {
		u.raw.SetDeadline(now)
	}
}
