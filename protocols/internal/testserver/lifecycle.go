package testserver

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"sync"
)

// Lifecycle starts a test server once and closes it once, in the style of
// net/http/httptest. The zero value is a server not yet started.
type Lifecycle struct {
	mu      sync.Mutex
	started bool
	closed  bool
	ln      *Listener
	served  chan struct{}
}

// Listen listens on 127.0.0.1 on a port chosen by the system. It panics,
// naming pkg, if it cannot.
func Listen(pkg string) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("%s: listen on 127.0.0.1:0: %v", pkg, err))
	}
	return ln
}

// Start marks the server started and wraps ln, which the server owns from
// then on, in a Listener; hang is as for NewListener. It panics, naming
// pkg, if the server was already started. Serve must follow.
func (lc *Lifecycle) Start(pkg string, ln net.Listener, hang bool) *Listener {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.started {
		panic(pkg + ": server already started")
	}
	lc.started = true
	lc.ln = NewListener(ln, hang)
	lc.served = make(chan struct{})
	return lc.ln
}

// Serve runs serve, the server's accept loop over the Listener that Start
// returned, in a goroutine; Close waits for it to return.
func (lc *Lifecycle) Serve(serve func()) {
	go func() {
		defer close(lc.served)
		serve()
	}()
}

// Close stops the listener, waits until the accept loop has returned (so
// that no handler can start after this), closes every live connection, and
// waits until each has been released by the goroutine that served it. It
// may be called more than once, and on a server that never started.
func (lc *Lifecycle) Close() {
	lc.mu.Lock()
	if !lc.started || lc.closed {
		lc.closed = true
		lc.mu.Unlock()
		return
	}
	lc.closed = true
	lc.mu.Unlock()

	_ = lc.ln.Listener.Close()
	<-lc.served
	lc.ln.CloseConns()
	lc.ln.Wait()
}

// Sessions reports how many connections the server has accepted, including
// those it left hanging; 0 before Start.
func (lc *Lifecycle) Sessions() int {
	lc.mu.Lock()
	ln := lc.ln
	lc.mu.Unlock()
	if ln == nil {
		return 0
	}
	return ln.Sessions()
}

// Logger returns l, or a logger that discards everything when l is nil.
func Logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// CRLF returns data with every line ended by CRLF, including the last.
func CRLF(data []byte) []byte {
	out := bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	out = bytes.ReplaceAll(out, []byte("\n"), []byte("\r\n"))
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}
