package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// connrateOptions configures the connection-rate load.
type connrateOptions struct {
	Target   string        // proxy (or echo) address
	Workers  int           // connections in flight at once
	Duration time.Duration // how long workers start new sessions
	Timeout  time.Duration // bound on one session: dial, round trip
}

// connrateResult is what one connection-rate run measured.
type connrateResult struct {
	Conns    int64         // sessions that completed their round trip
	Errors   int64         // sessions that failed
	Elapsed  time.Duration // from the first dial until the last session ended
	FirstErr error         // the first failure, if any
}

// Rate is completed sessions per second.
func (r connrateResult) Rate() float64 {
	return float64(r.Conns) / r.Elapsed.Seconds()
}

// connrateCmd parses flags, runs the load and prints its figures.
func connrateCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("connrate", flag.ContinueOnError)
	var o connrateOptions
	fs.StringVar(&o.Target, "target", "", "address to connect to (proxy or echo)")
	fs.IntVar(&o.Workers, "workers", 8, "connecting workers")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "how long to open new connections")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Second, "bound on one connection")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("connrate: %w", err)
	}
	r, err := connrateLoad(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "conns=%d seconds=%.3f rate=%.0f errors=%d\n",
		r.Conns, r.Elapsed.Seconds(), r.Rate(), r.Errors)
	if r.FirstErr != nil {
		fmt.Fprintf(out, "# first error: %v\n", r.FirstErr)
	}
	return nil
}

// connrateLoad runs o.Workers loops that each, until o.Duration has passed,
// connect, exchange a unique 8-byte tag with the echo back-end and close.
func connrateLoad(ctx context.Context, o connrateOptions) (connrateResult, error) {
	if o.Target == "" || o.Workers <= 0 || o.Duration <= 0 || o.Timeout <= 0 {
		return connrateResult{}, fmt.Errorf("connrate: need -target and positive -workers, -duration, -timeout")
	}
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var t tally
	var wg sync.WaitGroup
	start := time.Now()
	for w := range o.Workers {
		wg.Go(func() { connrateWorker(ctx, o, w, &t) })
	}
	wg.Wait()
	return connrateResult{
		Conns:    t.ok.Load(),
		Errors:   t.bad.Load(),
		Elapsed:  time.Since(start),
		FirstErr: t.firstErr(),
	}, nil
}

// connrateWorker opens one session after another until ctx ends; a session
// under way when it ends is finished, not abandoned.
func connrateWorker(ctx context.Context, o connrateOptions, worker int, t *tally) {
	for seq := uint64(0); ctx.Err() == nil; seq++ {
		t.record(session(o.Target, o.Timeout, tag(worker, seq)))
	}
}

// session is one short proxied exchange: connect, round trip, close.
func session(target string, timeout time.Duration, payload []byte) error {
	c, err := net.DialTimeout("tcp", target, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if err := roundTrip(c, payload); err != nil {
		return fmt.Errorf("%s: %w", c.LocalAddr(), err)
	}
	return nil
}

// tally counts outcomes from many goroutines and keeps the first error.
type tally struct {
	ok, bad atomic.Int64

	mu    sync.Mutex
	first error
}

// record counts err (nil is a success).
func (t *tally) record(err error) {
	if err == nil {
		t.ok.Add(1)
		return
	}
	t.bad.Add(1)
	t.mu.Lock()
	if t.first == nil {
		t.first = err
	}
	t.mu.Unlock()
}

// firstErr returns the first error recorded, or nil.
func (t *tally) firstErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.first
}
