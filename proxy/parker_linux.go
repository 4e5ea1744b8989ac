package proxy

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// parker waits on one epoll instance for idle sockets to become readable,
// so that an idle spliced connection holds no goroutine at all: only its
// sockets and a few hundred bytes of state. When a socket has bytes (or an
// EOF, or an error), the parker starts a goroutine that runs the socket's
// resume function, which moves what is queued and parks the socket again.
//
// The sockets stay registered with Go's own poller too; epoll allows one
// file in several instances. Registrations here are one-shot: each event
// disarms its socket until it is parked again. Events carry an id, not the
// descriptor, so an event for a session that has ended finds nothing.
type parker struct {
	epfd int
	wake int // eventfd that ends run

	mu      sync.Mutex
	waiting map[uint64]func() // parked id → resume
	nextID  uint64
	closed  bool
	done    chan struct{}
}

// newParker creates the epoll instance and starts its goroutine.
func newParker() (*parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	p := &parker{epfd: epfd, wake: wake, waiting: make(map[uint64]func()), nextID: 1, done: make(chan struct{})}
	go p.run()
	return p, nil
}

// newID returns an id for a socket that may be parked.
func (p *parker) newID() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := p.nextID
	p.nextID++
	return id
}

// park arms fd (as id) and calls resume on a new goroutine once it is
// readable, hung up or in error. The first park of a socket adds it to the
// epoll instance (added says whether it is there already); the kernel
// removes it when the socket closes, so it is never deleted by hand.
func (p *parker) park(fd int, id uint64, added bool, resume func()) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errParkerClosed
	}
	p.waiting[id] = resume
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setID(&ev, id)
	op := unix.EPOLL_CTL_ADD
	if added {
		op = unix.EPOLL_CTL_MOD
	}
	if err := unix.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		p.unpark(id)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// unpark withdraws a parked resume function; it reports whether one was
// waiting (and so will not run).
func (p *parker) unpark(id uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.waiting[id]
	delete(p.waiting, id)
	return ok
}

var errParkerClosed = fmt.Errorf("parker closed")

// run waits for events and starts each resume function on its own
// goroutine. It blocks one OS thread in epoll_wait, which the Go runtime
// allows for (the scheduler hands the thread's P to others).
func (p *parker) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			id := getID(&ev)
			if id == 0 {
				return // the eventfd: close was called
			}
			p.mu.Lock()
			resume := p.waiting[id]
			delete(p.waiting, id)
			p.mu.Unlock()
			if resume != nil {
				go resume()
			}
		}
	}
}

// close stops the parker. Parked resume functions are dropped; their
// sessions are ended by their own cancellation.
func (p *parker) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	var one = [8]byte{1}
	unix.Write(p.wake, one[:])
	<-p.done
	unix.Close(p.epfd)
	unix.Close(p.wake)
}

// setID and getID keep a 64-bit id in an epoll event's data (Fd and Pad
// together are the kernel's 64-bit epoll_data). The eventfd has id 0.
func setID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(id)
	ev.Pad = int32(id >> 32)
}

func getID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
