package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// server accepts connections and runs handle for each in its own goroutine.
// When its context ends it stops accepting, closes every open connection and
// waits for the handlers to return.
type server struct {
	handle func(net.Conn)
	errs   io.Writer // where accept errors are reported; nil: nowhere

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// listenAndServe listens on addr, prints "LISTEN <addr>" to out and serves
// until ctx ends.
func listenAndServe(ctx context.Context, addr string, out io.Writer, handle func(net.Conn)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	fmt.Fprintf(out, "LISTEN %s\n", ln.Addr())
	s := &server{handle: handle, errs: os.Stderr}
	return s.serve(ctx, ln)
}

// serve accepts on ln until ctx ends; ln is closed on return.
func (s *server) serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer s.closeAll()
	for {
		c, err := ln.Accept()
		if ctx.Err() != nil {
			if c != nil {
				c.Close()
			}
			return nil
		}
		if errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("accept: %w", err)
		}
		if err != nil {
			// Out of descriptors or kernel buffers for a moment: a
			// back-end must outlive that, or every later figure is lost.
			if s.errs != nil {
				fmt.Fprintf(s.errs, "gatebench: accept: %v (retrying)\n", err)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.start(c)
	}
}

// start tracks c and runs the handler for it.
func (s *server) start(c net.Conn) {
	s.mu.Lock()
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.forget(c)
		s.handle(c)
	}()
}

// forget closes c and stops tracking it.
func (s *server) forget(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeAll closes every open connection and waits for the handlers.
func (s *server) closeAll() {
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// open reports how many connections are being handled.
func (s *server) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// listenFlags parses the single -listen flag of the server subcommands.
func listenFlags(name string, args []string) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	addr := fs.String("listen", "127.0.0.1:0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return *addr, nil
}
