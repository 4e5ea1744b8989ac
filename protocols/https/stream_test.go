package https

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var streamSize = flag.Int64("https.stream-size", 1<<30, "bytes streamed each way by TestLargeBodiesStreamInConstantMemory")

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// heapWatch samples the heap in use until stopped and returns the peak.
func heapWatch() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

func TestLargeBodiesStreamInConstantMemory(t *testing.T) {
	size := *streamSize
	be := httpBackend(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, n)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		io.CopyN(w, zeros{}, size)
	}))
	addr := serve(t, &Frontend{Pool: newPool("web", "a="+be)})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := heapWatch()
	start := time.Now()

	// Upload: an OAB-sized POST body that no one buffers.
	c, br := dial(t, addr)
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	fmt.Fprintf(c, "POST /ews/upload HTTP/1.1\r\nHost: m\r\nContent-Length: %d\r\n\r\n", size)
	if _, err := io.CopyN(c, zeros{}, size); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if resp, body := response(t, br, "POST"); resp.StatusCode != 200 || body != strconv.FormatInt(size, 10) {
		t.Fatalf("upload answered %d %q", resp.StatusCode, body)
	}
	// Download on the same connection.
	send(t, c, "GET /oab/download HTTP/1.1\r\nHost: m\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	peak := stop()
	t.Logf("%d MiB each way in %v; heap in use %d MiB before, peak %d MiB",
		size>>20, time.Since(start).Round(time.Millisecond), base>>20, peak>>20)
	if peak > base+32<<20 {
		t.Errorf("heap in use grew from %d MiB to %d MiB while streaming", base>>20, peak>>20)
	}
}
