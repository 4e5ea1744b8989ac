package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"
)

type parkedResult struct {
	up, down int64
	err      error
}

// startParked joins two fresh loopback pairs with the parker and returns
// the application ends (the client's and the back-end's) and the result.
func startParked(t *testing.T, p *parker, ctx context.Context, idle time.Duration) (clientApp, backendApp io.ReadWriteCloser, done <-chan parkedResult) {
	t.Helper()
	cApp, cProxy := tcpPair(t)
	bApp, bProxy := tcpPair(t)
	ch := make(chan parkedResult, 1)
	_, err := p.splice(ctx, cProxy, bProxy, idle, quiet, func(up, down int64, err error) {
		ch <- parkedResult{up, down, err}
	})
	if err != nil {
		t.Fatal(err)
	}
	return cApp, bApp, ch
}

func newTestParker(t *testing.T) *parker {
	t.Helper()
	p, err := newParker()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}

// Bytes cross both ways intact, and a half-close in one direction leaves
// the other one working until it ends too.
func TestParkedSpliceBothWaysAndHalfClose(t *testing.T) {
	p := newTestParker(t)
	client, backend, done := startParked(t, p, context.Background(), 0)
	up := make([]byte, 3<<20)
	rand.Read(up)
	go func() {
		client.Write(up)
		client.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(backend) // EOF arrives: the client's half-close was passed on
	if err != nil || !bytes.Equal(got, up) {
		t.Fatalf("back-end got %d bytes (err %v), want the %d sent", len(got), err, len(up))
	}
	// The back-end can still answer the half-closed client.
	backend.Write([]byte("250 ok\r\n"))
	backend.(interface{ CloseWrite() error }).CloseWrite()
	reply, _ := io.ReadAll(client)
	if string(reply) != "250 ok\r\n" {
		t.Fatalf("client got %q", reply)
	}
	select {
	case r := <-done:
		if r.err != nil || r.up != int64(len(up)) || r.down != 8 {
			t.Errorf("result = %+v", r)
		}
	case <-time.After(wait):
		t.Fatal("session did not finish after both halves closed")
	}
}

// A silent session ends at the idle timeout; one where only the back-end
// talks (a server pushing IDLE updates) stays up past it.
func TestParkedSpliceIdle(t *testing.T) {
	p := newTestParker(t)
	_, _, silent := startParked(t, p, context.Background(), 100*time.Millisecond)
	client, backend, pushing := startParked(t, p, context.Background(), 100*time.Millisecond)
	stop := time.After(400 * time.Millisecond)
	go io.Copy(io.Discard, client)
push:
	for {
		select {
		case <-stop:
			break push
		case <-time.After(30 * time.Millisecond):
			backend.Write([]byte("* 1 EXISTS\r\n"))
		}
	}
	select {
	case r := <-silent:
		if !errors.Is(r.err, ErrIdle) {
			t.Errorf("silent session ended with %v, want ErrIdle", r.err)
		}
	case <-time.After(wait):
		t.Fatal("silent session outlived its idle timeout")
	}
	select {
	case r := <-pushing:
		t.Fatalf("a session with bytes moving ended: %+v", r)
	default:
	}
	r := <-pushing // now silent: it ends by itself
	if !errors.Is(r.err, ErrIdle) || r.down == 0 {
		t.Errorf("pushing session result = %+v", r)
	}
}

// Cancelling the context ends a parked session at once.
func TestParkedSpliceCancel(t *testing.T) {
	p := newTestParker(t)
	ctx, cancel := context.WithCancel(context.Background())
	_, _, done := startParked(t, p, ctx, 0)
	time.Sleep(20 * time.Millisecond) // both directions park
	cancel()
	select {
	case r := <-done:
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", r.err)
		}
	case <-time.After(wait):
		t.Fatal("cancel did not end the parked session")
	}
}

// Idle parked sessions hold no goroutine: that is the point of parking.
func TestParkedSessionsHoldNoGoroutines(t *testing.T) {
	p := newTestParker(t)
	before := runtime.NumGoroutine()
	const n = 50
	for range n {
		client, backend, _ := startParked(t, p, context.Background(), 0)
		client.Write([]byte("ping"))
		buf := make([]byte, 4)
		io.ReadFull(backend, buf)
	}
	if !eventually(wait, func() bool { return runtime.NumGoroutine() <= before+5 }) {
		t.Fatalf("%d idle sessions hold %d goroutines, want none", n, runtime.NumGoroutine()-before)
	}
}

// A client that resets the connection while its session is parked ends the
// session (the parker wakes on the error).
func TestParkedSpliceReset(t *testing.T) {
	p := newTestParker(t)
	cApp, cProxy := tcpPair(t)
	_, bProxy := tcpPair(t)
	done := make(chan error, 1)
	if _, err := p.splice(context.Background(), cProxy, bProxy, 0, quiet, func(_, _ int64, err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	cApp.SetLinger(0)
	cApp.Close() // RST
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("reset did not end the parked session")
	}
}

// An idle check that began just before the splice finished (its timer
// fired as the last leg ended) does not arm the timer again: a finished
// splice holds no timer.
func TestParkedFinishedSpliceKeepsNoTimer(t *testing.T) {
	p := newTestParker(t)
	cApp, cProxy := tcpPair(t)
	bApp, bProxy := tcpPair(t)
	done := make(chan struct{})
	s, err := p.splice(context.Background(), cProxy, bProxy, time.Hour, quiet, func(int64, int64, error) { close(done) })
	if err != nil {
		t.Fatal(err)
	}
	cApp.Close()
	bApp.Close()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("the splice did not end")
	}
	s.checkIdle() // the late idle check
	if s.timer.Stop() {
		t.Error("the idle timer was armed again after the splice finished")
	}
}
