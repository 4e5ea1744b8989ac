package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// testTimeout bounds every exchange in these tests.
const testTimeout = 5 * time.Second

// startServer serves handle on a fresh 127.0.0.1 port until the test ends.
func startServer(t *testing.T, handle func(net.Conn)) (string, *server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{handle: handle}
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String(), s
}

// dial connects to addr with a deadline on everything that follows.
func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	return c.(*net.TCPConn)
}

func TestSinkAcknowledgesByteCount(t *testing.T) {
	addr, _ := startServer(t, sinkConn)
	c := dial(t, addr)
	io.WriteString(c, "hello, ")
	io.WriteString(c, "sink")
	// The sink answers only once it has seen the end of the stream.
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "11\n" {
		t.Fatalf("sink answered %q, want the count of 11 bytes as %q", got, "11\n")
	}
}

func TestEchoReturnsEveryByte(t *testing.T) {
	addr, _ := startServer(t, echoConn)
	c := dial(t, addr)
	r := bufio.NewReader(c)
	for _, line := range []string{"ping\n", strings.Repeat("x", 3*echoBufSize) + "\n"} {
		io.WriteString(c, line)
		got, err := r.ReadString('\n')
		if err != nil || got != line {
			t.Fatalf("echo of %d bytes: got %d bytes, err %v", len(line), len(got), err)
		}
	}
	// Closing our side ends the session at the back-end too.
	c.CloseWrite()
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after half-close: read %d bytes, err %v; want EOF", n, err)
	}
}

func TestServerClosesConnectionsOnStop(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{handle: echoConn}
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, ln) }()
	c := dial(t, ln.Addr().String())
	if err := roundTrip(c, []byte("held")); err != nil {
		t.Fatal(err)
	}
	cancel()
	// A stopped back-end drops its sessions instead of leaking them.
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after stop: %v, want EOF", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), testTimeout); err == nil {
		t.Fatal("a stopped server still accepts")
	}
}

func TestFreePortsAreDistinctAndFree(t *testing.T) {
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p < minPort || p >= ephemeralStart() {
			t.Fatalf("ports %v: want distinct ports below the ephemeral range", ports)
		}
		seen[p] = true
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		ln.Close()
	}
}

func TestRunRejectsUnknownCommand(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}} {
		if err := run(context.Background(), args, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want the usage error", args, err)
		}
	}
}
