package wiretest

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

// Main runs the tests of a package and exits. It fails the package when
// goroutines outlive the tests: every session, splice and watcher a test
// starts must have ended. A -fuzz run, whose engine keeps goroutines of its
// own, is not checked.
func Main(m *testing.M) { MainWithin(m, 5*time.Second) }

// MainWithin is Main for a package whose goroutines may take up to settle
// to end after its last test.
func MainWithin(m *testing.M, settle time.Duration) { MainIgnoring(m, settle) }

// MainIgnoring is MainWithin for a package whose tests start library
// goroutines that have no way to stop (Pebble's validation workers,
// certmagic's per-CA rate limiters): goroutines whose stack holds one of
// ignore are not counted.
func MainIgnoring(m *testing.M, settle time.Duration, ignore ...string) {
	before := goroutines(ignore)
	code := m.Run()
	if code == 0 && !fuzzing() && !settled(before, settle, ignore) {
		fmt.Fprintf(os.Stderr, "goroutines leaked: %d before the tests, %d after\n", before, goroutines(ignore))
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		code = 1
	}
	os.Exit(code)
}

// goroutines counts the goroutines whose stacks hold none of ignore.
func goroutines(ignore []string) int {
	if len(ignore) == 0 {
		return runtime.NumGoroutine()
	}
	buf := make([]byte, 4<<20)
	n := 0
	for _, g := range bytes.Split(buf[:runtime.Stack(buf, true)], []byte("\n\ngoroutine ")) {
		if !containsAny(g, ignore) {
			n++
		}
	}
	return n
}

func containsAny(b []byte, needles []string) bool {
	for _, n := range needles {
		if bytes.Contains(b, []byte(n)) {
			return true
		}
	}
	return false
}

// fuzzing reports a -fuzz run.
func fuzzing() bool {
	f := flag.Lookup("test.fuzz")
	w := flag.Lookup("test.fuzzworker")
	return (f != nil && f.Value.String() != "") || (w != nil && w.Value.String() == "true")
}

// settled waits up to d for the goroutine count to fall to at most n.
func settled(n int, d time.Duration, ignore []string) bool {
	for deadline := time.Now().Add(d); goroutines(ignore) > n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// CloseWithin runs closeServer and fails the test if it does not return
// within Wait.
func CloseWithin(t testing.TB, closeServer func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		closeServer()
	}()
	select {
	case <-done:
	case <-time.After(Wait):
		t.Fatal("Close did not return")
	}
}

// Eventually polls cond until it holds, and reports false if it still does
// not after d.
func Eventually(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// GoroutinesGone fails the test if, shortly after a server's Close, a
// goroutine's stack still holds one of the needles (function names such as
// "pop3test.(*Server)").
func GoroutinesGone(t testing.TB, needles ...string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := buf[:runtime.Stack(buf, true)]
		var found []byte
		for _, n := range needles {
			if i := bytes.Index(stacks, []byte(n)); i >= 0 {
				found = stacks[max(0, i-200):min(len(stacks), i+200)]
			}
		}
		if found == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server goroutine still running after Close:\n%s", found)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
