package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// idleOptions configures the idle-connections load.
type idleOptions struct {
	Target  string        // proxy (or echo) address
	N       int           // connections to open and hold
	Workers int           // connections being opened at once
	Hold    time.Duration // how long to hold them at most
	Timeout time.Duration // bound on opening one connection and its round trip
}

// idleCmd opens o.N proxied connections, proves each with a round trip, prints
// "READY conns=N" and holds them idle until the hold time passes or the
// process is told to stop. Then it round-trips on every connection again and
// prints "DONE alive=K lost=L", so that a proxy which dropped idle sessions
// during the measurement is caught.
func idleCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	var o idleOptions
	fs.StringVar(&o.Target, "target", "", "address to connect to (proxy or echo)")
	fs.IntVar(&o.N, "n", 5000, "connections to hold")
	fs.IntVar(&o.Workers, "workers", 8, "connections opened at once")
	fs.DurationVar(&o.Hold, "hold", 10*time.Second, "how long to hold the connections at most")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Second, "bound on one connection's dial and round trip")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	conns, err := openIdle(o)
	defer closeConns(conns)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "READY conns=%d\n", len(conns))
	hold(ctx, o.Hold)
	alive, lost := checkIdle(conns, o)
	fmt.Fprintf(out, "DONE alive=%d lost=%d\n", alive, lost)
	if lost > 0 {
		return fmt.Errorf("idle: %d of %d held connections no longer echo", lost, len(conns))
	}
	return nil
}

// openIdle dials o.N connections and round-trips a unique tag on each. On
// the first failure it stops and returns what it opened with the error.
func openIdle(o idleOptions) ([]net.Conn, error) {
	if o.Target == "" || o.N <= 0 || o.Workers <= 0 || o.Timeout <= 0 {
		return nil, fmt.Errorf("idle: need -target and positive -n, -workers, -timeout")
	}
	conns := make([]net.Conn, o.N)
	err := forEach(o.N, o.Workers, func(i int) error {
		c, err := net.DialTimeout("tcp", o.Target, o.Timeout)
		if err != nil {
			return fmt.Errorf("idle: connection %d: %w", i, err)
		}
		conns[i] = c
		return idleRoundTrip(c, o.Timeout, tag(0, uint64(i)))
	})
	return compact(conns), err
}

// checkIdle round-trips once more on every held connection and counts the
// ones that still work.
func checkIdle(conns []net.Conn, o idleOptions) (alive, lost int) {
	var t tally
	forEach(len(conns), o.Workers, func(i int) error {
		err := idleRoundTrip(conns[i], o.Timeout, tag(1, uint64(i)))
		t.record(err)
		return nil
	})
	return int(t.ok.Load()), int(t.bad.Load())
}

// idleRoundTrip does one bounded round trip on c and clears the deadline,
// leaving c idle with no timer armed.
func idleRoundTrip(c net.Conn, timeout time.Duration, payload []byte) error {
	c.SetDeadline(time.Now().Add(timeout))
	if err := roundTrip(c, payload); err != nil {
		return fmt.Errorf("idle: %s: %w", c.LocalAddr(), err)
	}
	c.SetDeadline(time.Time{})
	return nil
}

// hold waits for d or until ctx ends.
func hold(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// forEach runs fn(0..n-1) on workers goroutines. After the first error no
// new index is started; every error is returned, joined.
func forEach(n, workers int, fn func(i int) error) error {
	next := make(chan int)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for range min(workers, n) {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := 0; i < n; i++ {
		mu.Lock()
		failed := len(errs) > 0
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// compact drops the nil entries of conns.
func compact(conns []net.Conn) []net.Conn {
	out := conns[:0]
	for _, c := range conns {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// closeConns closes every connection in conns.
func closeConns(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}
