//go:build linux

package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLogLimiterWindows(t *testing.T) {
	var l LogLimiter
	t0 := time.Unix(1000, 0)
	if ok, _ := l.allow("bad_request", "192.0.2.1", t0); !ok {
		t.Fatal("the first event was held back")
	}
	for i := range 4 {
		if ok, _ := l.allow("bad_request", "192.0.2.1", t0.Add(time.Duration(i)*time.Second)); ok {
			t.Fatal("an event within the window was written")
		}
	}
	if ok, _ := l.allow("header_timeout", "192.0.2.1", t0); !ok {
		t.Error("another reason shares the window")
	}
	if ok, _ := l.allow("bad_request", "192.0.2.2", t0); !ok {
		t.Error("another address shares the window")
	}
	ok, n := l.allow("bad_request", "192.0.2.1", t0.Add(time.Minute))
	if !ok || n != 4 {
		t.Errorf("after the window: written %v with %d held back, want true and 4", ok, n)
	}
}

func TestLogLimiterBounded(t *testing.T) {
	l := LogLimiter{MaxKeys: 100}
	t0 := time.Unix(1000, 0)
	written := 0
	for i := range 10000 {
		if ok, _ := l.allow("bad_request", fmt.Sprintf("10.0.%d.%d", i/256, i%256), t0); ok {
			written++
		}
	}
	// 100 addresses get their own line; the rest share one.
	if written != 101 || len(l.seen) > 101 {
		t.Errorf("10000 addresses in one window: %d lines, %d keys; want 101 and at most 101", written, len(l.seen))
	}
}

func TestLogLimiterLog(t *testing.T) {
	var b strings.Builder
	log := slog.New(slog.NewTextHandler(&b, nil))
	var l LogLimiter
	t0 := time.Unix(1000, 0)
	for i := range 3 {
		l.logAt(context.Background(), t0.Add(time.Duration(i)*time.Second), log, slog.LevelInfo, "request refused", "bad_request", "192.0.2.1", "status", 400)
	}
	if got := strings.Count(b.String(), "\n"); got != 1 || !strings.Contains(b.String(), "reason=bad_request") || !strings.Contains(b.String(), "status=400") {
		t.Errorf("three refusals logged as %q", b.String())
	}
	b.Reset()
	l.logAt(context.Background(), t0.Add(time.Minute), log, slog.LevelInfo, "request refused", "bad_request", "192.0.2.1")
	if !strings.Contains(b.String(), "suppressed=2") {
		t.Errorf("the line after the window: %q, want suppressed=2", b.String())
	}
}
