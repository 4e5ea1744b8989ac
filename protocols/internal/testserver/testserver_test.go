package testserver

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// startEcho runs, over a Lifecycle, a server that greets with "hello" and
// echoes what it reads.
func startEcho(t *testing.T, hang bool) (*Lifecycle, string) {
	t.Helper()
	lc := &Lifecycle{}
	ln := Listen("testserver")
	tl := lc.Start("testserver", ln, hang)
	lc.Serve(func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, "hello\r\n")
				io.Copy(c, c)
			}()
		}
	})
	t.Cleanup(lc.Close)
	return lc, ln.Addr().String()
}

func TestServesCountsAndCloses(t *testing.T) {
	lc, addr := startEcho(t, false)
	c := wiretest.Dial(t, addr)
	c.Expect("hello")
	c.Send("ping")
	c.Expect("ping") // echoed: the server, not the listener, answers
	if got := lc.Sessions(); got != 1 {
		t.Errorf("Sessions() = %d, want 1", got)
	}
	wiretest.CloseWithin(t, lc.Close)
	c.ExpectClosed()
	if nc, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		nc.Close()
		t.Error("the listener still accepts after Close")
	}
	lc.Close() // a second Close is harmless
}

func TestHangHoldsConnectionsSilently(t *testing.T) {
	lc, addr := startEcho(t, true)
	c := wiretest.Dial(t, addr)
	c.Send("ping")
	c.ExpectSilence(200 * time.Millisecond)
	if got := lc.Sessions(); got != 1 {
		t.Errorf("Sessions() = %d, want the hung connection counted", got)
	}
	wiretest.CloseWithin(t, lc.Close)
	c.ExpectClosed()
	wiretest.GoroutinesGone(t, "testserver.holdSilently")
}

func TestWrapSeesEveryServedConnection(t *testing.T) {
	ln := NewListener(Listen("testserver"), false)
	defer ln.Close()
	var wrapped *Conn
	ln.Wrap = func(c *Conn) net.Conn { wrapped = c; return c }
	client := wiretest.Dial(t, ln.Addr().String())
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if wrapped == nil || net.Conn(wrapped) != c {
		t.Fatalf("Accept returned %v, want what Wrap returned (%v)", c, wrapped)
	}
	c.Close()
	ln.Wait() // the closed Conn was released
	client.ExpectClosed()
}

func TestCloseBeforeStartIsHarmless(t *testing.T) {
	var lc Lifecycle
	lc.Close()
	lc.Close()
	if got := lc.Sessions(); got != 0 {
		t.Fatalf("Sessions() = %d before Start", got)
	}
}

func TestRecords(t *testing.T) {
	var r Records[int]
	if all := r.All(); all != nil {
		t.Fatalf("All() = %#v on empty Records, want nil", all)
	}
	if m := Map(&r, func(int) string { return "" }); m == nil || len(m) != 0 {
		t.Fatalf("Map = %#v on empty Records, want an empty slice", m)
	}
	r.Add(1)
	r.Add(2)
	all := r.All()
	all[0] = 9 // a copy: the records do not change
	if got := Map(&r, func(v int) int { return v * 10 }); len(got) != 2 || got[0] != 10 || got[1] != 20 {
		t.Fatalf("Map = %v, want [10 20]", got)
	}
}

func TestCRLF(t *testing.T) {
	for in, want := range map[string]string{"": "", "a": "a\r\n", "a\nb\n": "a\r\nb\r\n", "a\r\nb": "a\r\nb\r\n"} {
		if got := string(CRLF([]byte(in))); got != want {
			t.Errorf("CRLF(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStartTwicePanics(t *testing.T) {
	lc, _ := startEcho(t, false)
	ln := Listen("testserver")
	defer ln.Close()
	defer func() {
		if r := recover(); r != "testserver: server already started" {
			t.Errorf("second Start: recovered %v, want the already-started panic", r)
		}
	}()
	lc.Start("testserver", ln, false)
}
