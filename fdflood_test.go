package gatehouse

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// floodLimit is the RLIMIT_NOFILE of the gatehouse under test.
const floodLimit = 256

// A flood of idle connections past gatehouse's descriptor limit (a child
// process running with RLIMIT_NOFILE 256): the excess is refused at once
// and counted, the admin listener keeps answering, and the back-end stays
// up in /api/status.
func TestDescriptorFloodLeavesAdminServing(t *testing.T) {
	if be := os.Getenv("GATEHOUSE_FD_CHILD"); be != "" {
		floodChild(t, be)
		return
	}
	be := echoServer(t, "a")
	defer be.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDescriptorFloodLeavesAdminServing$")
	cmd.Env = append(os.Environ(), "GATEHOUSE_FD_CHILD="+be.Addr().String())
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	// go test prints a failing child's messages on stdout: pass on every
	// line that is not the addresses.
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	var main, admin string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "ADDRS %s %s", &main, &admin); err == nil {
			break
		}
		t.Log("child:", sc.Text())
	}
	if admin == "" {
		t.Fatal("the child never reported its addresses")
	}
	go io.Copy(io.Discard, stdout)

	const flood = 300
	budget := (floodLimit - proxy.FDReserve(floodLimit)) / proxy.SessionFDs
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range flood {
		c, err := net.DialTimeout("tcp", main, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", len(clients), err)
		}
		clients = append(clients, c)
	}
	refused := 0
	deadline := time.Now().Add(30 * time.Second)
	for refused < flood-budget && time.Now().Before(deadline) {
		refused = metricValue(t, admin, `gatehouse_sessions_refused_total{listener="main",reason="fd_reserve"}`)
		time.Sleep(50 * time.Millisecond)
	}
	if refused < flood-budget {
		t.Fatalf("%d connections refused with fd_reserve, want at least %d", refused, flood-budget)
	}
	last := clients[len(clients)-1]
	last.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := last.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("an excess client read %d bytes, %v; want EOF", n, err)
	}
	time.Sleep(500 * time.Millisecond) // five probe intervals with the flood connected
	if !adminBackendUp(t, admin, "main", "a") {
		t.Error("the flood marked the back-end down")
	}
	if got := askConn(t, clients[0], "still"); got != "a still" {
		t.Errorf("a session within the budget answered %q", got)
	}
}

func floodChild(t *testing.T, backend string) {
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: floodLimit, Max: floodLimit}); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
log: {level: error}
backends: {a: {address: %q}}
listeners:
  - name: main
    listen: 127.0.0.1:0
    backends: [a]
    health: {probe: tcp, interval: 100ms, timeout: 100ms, rise: 1, fall: 1}
`, backend))
	fmt.Printf("ADDRS %s %s\n", srv.Addrs()["main"][0], srv.AdminAddr())
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
	}
}

// metricValue reads one series from the admin listener's /metrics (0 when
// absent); the listener must answer.
func metricValue(t *testing.T, admin, series string) int {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("the admin listener does not answer: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return 0
}

func askConn(t *testing.T, c net.Conn, line string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s\n", line)
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading through a live session: %v", err)
	}
	return strings.TrimSpace(reply)
}
