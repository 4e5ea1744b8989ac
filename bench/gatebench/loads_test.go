package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestStreamIsAcknowledgedInFull(t *testing.T) {
	addr, _ := startServer(t, sinkConn)
	const n = 8<<20 + 123 // not a multiple of the write size
	r, err := streamLoad(context.Background(), streamOptions{Target: addr, Bytes: n, Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != n || r.Elapsed <= 0 || r.GBps() <= 0 {
		t.Fatalf("result %+v, want %d bytes in a positive time", r, n)
	}
}

func TestStreamCatchesLostBytes(t *testing.T) {
	// A sink that lost a byte on the way must not pass as a fast proxy.
	short := func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "%d\n", n-1)
	}
	addr, _ := startServer(t, short)
	_, err := streamLoad(context.Background(), streamOptions{Target: addr, Bytes: 1 << 20, Timeout: testTimeout})
	if err == nil || !strings.Contains(err.Error(), "sink received 1048575") {
		t.Fatalf("err = %v, want the shortfall reported", err)
	}
}

func TestStreamNeedsTheCount(t *testing.T) {
	// A path that closes without passing the sink's answer back (a proxy
	// without half-close) fails instead of timing the local send buffer.
	mute := func(c net.Conn) { io.Copy(io.Discard, c) }
	addr, _ := startServer(t, mute)
	_, err := streamLoad(context.Background(), streamOptions{Target: addr, Bytes: 1 << 20, Timeout: testTimeout})
	if err == nil || !strings.Contains(err.Error(), "waiting for the sink's count") {
		t.Fatalf("err = %v, want a missing count reported", err)
	}
}

func TestConnrateCompletesSessions(t *testing.T) {
	addr, s := startServer(t, echoConn)
	o := connrateOptions{Target: addr, Workers: 2, Duration: 200 * time.Millisecond, Timeout: testTimeout}
	r, err := connrateLoad(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Conns == 0 || r.Errors != 0 || r.FirstErr != nil || r.Rate() <= 0 {
		t.Fatalf("result %+v, want sessions and no errors", r)
	}
	if r.Elapsed < o.Duration || r.Elapsed > o.Duration+testTimeout {
		t.Fatalf("elapsed %v, want about %v", r.Elapsed, o.Duration)
	}
	waitOpen(t, s, 0) // every session was closed
}

func TestConnrateCountsWrongEchoes(t *testing.T) {
	liar := func(c net.Conn) {
		buf := make([]byte, 8)
		io.ReadFull(c, buf)
		io.WriteString(c, "notyours")
	}
	addr, _ := startServer(t, liar)
	o := connrateOptions{Target: addr, Workers: 1, Duration: 50 * time.Millisecond, Timeout: testTimeout}
	r, err := connrateLoad(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Conns != 0 || r.Errors == 0 || r.FirstErr == nil || !strings.Contains(r.FirstErr.Error(), "echo returned") {
		t.Fatalf("result %+v, want every session counted as an error", r)
	}
}

func TestConnratePrintsFigures(t *testing.T) {
	addr, _ := startServer(t, echoConn)
	var out strings.Builder
	args := []string{"connrate", "-target", addr, "-workers", "1", "-duration", "50ms"}
	if err := run(context.Background(), args, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "conns=") || !strings.Contains(out.String(), " errors=0\n") {
		t.Fatalf("printed %q, want conns=… errors=0", out.String())
	}
}

func TestIdleHoldsUntilStopped(t *testing.T) {
	addr, s := startServer(t, echoConn)
	ctx, cancel := context.WithCancel(context.Background())
	lines, done := startIdle(ctx, addr, 20)
	if got := nextLine(t, lines); got != "READY conns=20" {
		t.Fatalf("first line %q, want READY conns=20", got)
	}
	// Every held session is open at the back-end while the client idles.
	waitOpen(t, s, 20)
	cancel()
	if got := nextLine(t, lines); got != "DONE alive=20 lost=0" {
		t.Fatalf("last line %q, want every session alive", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitOpen(t, s, 0)
}

func TestIdleCatchesDroppedSessions(t *testing.T) {
	addr, s := startServer(t, echoConn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines, done := startIdle(ctx, addr, 5)
	if got := nextLine(t, lines); got != "READY conns=5" {
		t.Fatalf("first line %q, want READY conns=5", got)
	}
	waitOpen(t, s, 5)
	s.closeAll() // what a proxy that reaps idle sessions would do
	cancel()
	if got := nextLine(t, lines); got != "DONE alive=0 lost=5" {
		t.Fatalf("last line %q, want all five lost", got)
	}
	if err := <-done; err == nil {
		t.Fatal("idle succeeded although its sessions were dropped")
	}
}

func TestIdleFailsWithoutEcho(t *testing.T) {
	addr, _ := startServer(t, sinkConn) // swallows the round trip
	var out strings.Builder
	args := []string{"idle", "-target", addr, "-n", "3", "-timeout", "200ms"}
	err := run(context.Background(), args, &out)
	if err == nil || strings.Contains(out.String(), "READY") {
		t.Fatalf("err %v, printed %q; want a failure before READY", err, out.String())
	}
}

// startIdle runs the idle subcommand for n sessions with a long hold; its
// output arrives line by line, its result on done.
func startIdle(ctx context.Context, addr string, n int) (<-chan string, <-chan error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	args := []string{"idle", "-target", addr, "-n", fmt.Sprint(n), "-hold", "1m", "-timeout", testTimeout.String()}
	go func() {
		err := run(ctx, args, pw)
		pw.Close()
		done <- err
	}()
	lines := make(chan string, 4)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines, done
}

// nextLine waits (bounded) for the next output line.
func nextLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("output ended")
		}
		return l
	case <-time.After(testTimeout):
		t.Fatal("no output line in time")
	}
	return ""
}

// waitOpen waits (bounded) until s handles exactly n connections.
func waitOpen(t *testing.T, s *server, n int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for s.open() != n {
		if time.Now().After(deadline) {
			t.Fatalf("server has %d open connections, want %d", s.open(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
