package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/upgrade"
)

// A SIGHUP sent the moment the pidfile names the process (an init script
// or `systemctl reload` right after start) is a reload, not the signal's
// default action: the process used to die of it before it had installed
// its handlers, every time.
func TestSignalRightAfterPidfileIsAReload(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	echo := startEcho(t)
	for i := range 5 {
		dir := t.TempDir()
		addr := wiretest.FreeAddr(t)
		path, pidfile := filepath.Join(dir, "gatehouse.yaml"), filepath.Join(dir, "pid")
		writeFile(t, path, fmt.Sprintf(`
state_dir: %q
admin: {listen: "off"}
backends: {echo: {address: %q}}
listeners:
  - {name: tcp, listen: %q, backends: [echo]}
`, dir, echo, addr))
		cmd := exec.Command(bin, "run", "-config", path, "-pidfile", pidfile)
		var logs strings.Builder
		cmd.Stderr = &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan *os.ProcessState, 1)
		go func() { st, _ := cmd.Process.Wait(); exited <- st }()
		pid := awaitPid(t, pidfile)
		syscall.Kill(pid, syscall.SIGHUP)
		select {
		case st := <-exited:
			t.Fatalf("start %d: a SIGHUP right after the pidfile ended the process (%v); log:\n%s", i, st, logs.String())
		case <-time.After(500 * time.Millisecond):
		}
		waitListening(t, addr)
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}
}

// awaitPid polls a pidfile as tightly as a script would and returns the
// first process id it holds.
func awaitPid(t *testing.T, pidfile string) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if pid, err := upgrade.PID(pidfile); err == nil {
			return pid
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no process id in %s", pidfile)
	return 0
}
