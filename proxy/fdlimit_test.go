//go:build linux

package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/health"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// fdLimit is the child's RLIMIT_NOFILE: the budget is fdLimit less
// FDReserve(fdLimit) = 64, so 96 relayed sessions.
const fdLimit = 256

// childStatus is what the child's admin-like listener reports.
type childStatus struct {
	Accepted, Refused uint64
	Healthy, ProbeUp  bool
	ProbeErr          string
}

// A flood of idle connections past the descriptor limit of the process
// (a child running with RLIMIT_NOFILE 256): the excess is refused at once,
// the admin-like HTTP listener of the same process keeps answering, and
// the back-end is marked down neither by the health probe nor by passive
// dial failures.
func TestFloodPastDescriptorLimit(t *testing.T) {
	if os.Getenv("PROXY_FD_CHILD") != "" {
		fdChild(t, os.Getenv("PROXY_FD_CHILD"))
		return
	}
	be := startHoldingEcho(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodPastDescriptorLimit$")
	cmd.Env = append(os.Environ(), "PROXY_FD_CHILD="+be)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	var proxyAddr, adminAddr string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "ADDRS %s %s", &proxyAddr, &adminAddr); err == nil {
			break
		}
		t.Log("child:", sc.Text()) // go test prints a failing child's messages on stdout
	}
	if adminAddr == "" {
		t.Fatal("the child never reported its addresses")
	}
	go io.Copy(io.Discard, stdout)

	const flood = 300
	var clients []net.Conn
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
	})
	for range flood {
		c, err := net.DialTimeout("tcp", proxyAddr, frontendWait)
		if err != nil {
			t.Fatalf("dial %d: %v", len(clients), err)
		}
		clients = append(clients, c)
	}
	var st childStatus
	deadline := time.Now().Add(30 * time.Second)
	for st.Accepted+st.Refused < flood && time.Now().Before(deadline) {
		st = fetchStatus(t, adminAddr)
		time.Sleep(20 * time.Millisecond)
	}
	if st.Accepted+st.Refused < flood {
		t.Fatalf("status %+v: not every connection was accepted or refused", st)
	}
	budget := (fdLimit - proxy.FDReserve(fdLimit)) / proxy.SessionFDs
	if st.Accepted == 0 || st.Accepted > uint64(budget) || st.Refused < uint64(flood-budget) {
		t.Errorf("accepted %d, refused %d; want at most %d accepted and the rest refused", st.Accepted, st.Refused, budget)
	}
	if !st.Healthy || !st.ProbeUp {
		t.Errorf("status %+v: the back-end was marked down", st)
	}
	last := clients[len(clients)-1]
	last.SetReadDeadline(time.Now().Add(frontendWait))
	if n, err := last.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("an excess client read %d bytes, %v; want EOF", n, err)
	}
	first := clients[0]
	first.SetDeadline(time.Now().Add(frontendWait))
	io.WriteString(first, "ping\n")
	if line, err := bufio.NewReader(first).ReadString('\n'); err != nil || line != "ping\n" {
		t.Errorf("a session within the budget echoed %q, %v", line, err)
	}
	time.Sleep(300 * time.Millisecond) // a dozen probes more, with the flood still connected
	if st = fetchStatus(t, adminAddr); !st.Healthy || !st.ProbeUp {
		t.Errorf("status %+v after the flood: the back-end was marked down", st)
	}
}

func fetchStatus(t *testing.T, admin string) childStatus {
	t.Helper()
	c := http.Client{Timeout: frontendWait}
	resp, err := c.Get("http://" + admin + "/status")
	if err != nil {
		t.Fatalf("the admin-like listener does not answer: %v", err)
	}
	defer resp.Body.Close()
	var st childStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// fdChild is the process under test: a TCP proxy to backend with a
// health monitor, and an HTTP listener reporting on both.
func fdChild(t *testing.T, backend string) {
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: fdLimit, Max: fdLimit}); err != nil {
		t.Fatal(err)
	}
	b := proxy.NewBackend("be", backend, 1)
	mon := health.NewMonitor(quietLog, func(tr health.Transition) { b.SetHealthy(tr.Up) })
	defer mon.Close()
	mon.Add(health.Check{Target: "be", Name: "tcp", Addr: backend, Probe: &health.TCP{}, Interval: 20 * time.Millisecond, Fall: 1})
	srv := &proxy.Server{Name: "fdflood", Log: quietLog,
		Handler: &proxy.TCP{Pool: &proxy.Pool{Name: "fdflood", Backends: []*proxy.Backend{b}}, Link: proxy.Link{Log: quietLog}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	admin := httptestServer(t, func(w http.ResponseWriter, _ *http.Request) {
		accepted, refused := srv.Stats()
		st, _ := mon.Status("be", "tcp")
		json.NewEncoder(w).Encode(childStatus{Accepted: accepted, Refused: refused, Healthy: b.Healthy(), ProbeUp: st.Up, ProbeErr: st.LastErr})
	})
	fmt.Printf("ADDRS %s %s\n", ln.Addr(), admin)
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
	}
}

// httptestServer serves h on 127.0.0.1:0 until the test ends.
func httptestServer(t *testing.T, h http.HandlerFunc) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), frontendWait)
		defer cancel()
		hs.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// startHoldingEcho is a back-end that echoes lines and holds every
// connection until the test ends.
func startHoldingEcho(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					io.WriteString(c, strings.ToLower(line))
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
