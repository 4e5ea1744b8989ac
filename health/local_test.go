package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// emfile is a dial failing as it does when the process is out of descriptors.
var emfile error = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}

func TestLocalError(t *testing.T) {
	for _, err := range []error{emfile, fmt.Errorf("probe: %w", syscall.ENFILE), syscall.ENOBUFS, syscall.EADDRNOTAVAIL} {
		if !LocalError(err) {
			t.Errorf("%v is not local", err)
		}
	}
	for _, err := range []error{nil, syscall.ECONNREFUSED, context.DeadlineExceeded, errors.New("too many open files")} {
		if LocalError(err) {
			t.Errorf("%v is local", err)
		}
	}
}

// A probe that fails locally neither takes a check down (confirmed or
// not) nor brings one up: the state stays, the error shows, the probe
// counts as unknown.
func TestMonitorLocalErrorKeepsState(t *testing.T) {
	up := play(emfile, emfile, pass, emfile)
	down := play(fail, emfile)
	m, w := watch(t, nil)
	m.Add(Check{Target: "mx-local", Name: "smtp", Addr: "192.0.2.1:25", Probe: up, Interval: fast, Fall: 1})
	m.Add(Check{Target: "mx-local", Name: "down", Addr: "192.0.2.2:25", Probe: down, Interval: fast, Rise: 1})
	waitFor(t, "twenty probes each", func() bool { return up.count() > 20 && down.count() > 20 })
	if got := w.changes(); len(got) != 1 || got[0].Check != "down" || got[0].Up {
		t.Fatalf("changes %+v, want only the down check's first failure", got)
	}
	st, _ := m.Status("mx-local", "smtp")
	if !st.Up || !strings.Contains(st.LastErr, "too many open files") {
		t.Errorf("status %+v, want up with the local error shown", st)
	}
	if st, _ := m.Status("mx-local", "down"); st.Up {
		t.Error("a local error brought the down check up")
	}
	if n := testutil.ToFloat64(probesTotal.WithLabelValues("mx-local", "smtp", "unknown")); n < 18 {
		t.Errorf("%v probes counted unknown", n)
	}
}

// With the process really out of descriptors (a child with a low
// RLIMIT_NOFILE, every descriptor taken), the TCP probe fails with
// EMFILE and the back-end stays up.
func TestMonitorOutOfDescriptors(t *testing.T) {
	if os.Getenv("HEALTH_EMFILE_CHILD") == "1" {
		outOfDescriptorsChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMonitorOutOfDescriptors$", "-test.v")
	cmd.Env = append(os.Environ(), "HEALTH_EMFILE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "child: up after EMFILE") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func outOfDescriptorsChild(t *testing.T) {
	ln := listen(t)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 64, Max: 64}); err != nil {
		t.Fatal(err)
	}
	var held []*os.File
	defer func() {
		for _, f := range held {
			f.Close()
		}
	}()
	for range 64 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		held = append(held, f)
	}
	m, w := watch(t, nil)
	m.Add(Check{Target: "mx-emfile", Name: "tcp", Addr: ln.Addr().String(), Probe: &TCP{}, Interval: fast, Fall: 1})
	waitFor(t, "a probe", func() bool {
		st, _ := m.Status("mx-emfile", "tcp")
		return strings.Contains(st.LastErr, "too many open files")
	})
	time.Sleep(20 * fast)
	if st, _ := m.Status("mx-emfile", "tcp"); !st.Up || len(w.changes()) != 0 {
		t.Fatalf("status %+v, changes %+v: out of descriptors took the back-end down", st, w.changes())
	}
	t.Log("child: up after EMFILE")
}
