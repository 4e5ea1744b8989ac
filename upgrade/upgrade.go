// Package upgrade hands a running gatehouse's listening sockets to a new
// binary, so the binary can be replaced without refusing a connection or
// ending a session (nginx's USR2 binary upgrade, HAProxy's master-worker
// reload):
//
//  1. the running process starts the new binary with every listening
//     socket as an inherited descriptor, named by its configured address
//     in the environment, plus a pipe;
//  2. the new process builds its configuration on those sockets (binding
//     only addresses it did not inherit), starts serving, and writes
//     "ready" on the pipe;
//  3. the old process then stops accepting, keeps its live sessions until
//     they end (bounded by upgrade_grace), and exits. A new process that
//     exits or stays silent leaves the old one serving.
//
// It may import only the standard library. Written here rather than taken
// from cloudflare/tableflip because tableflip's Fds keeps a duplicate of
// every listener it ever created for the next upgrade: a port a reload
// removed would stay bound (accepting into a queue nobody reads) until
// the process exits.
package upgrade

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// envSockets names, in a new process's environment, the addresses of the
// inherited sockets in descriptor order (from 3), then the ready pipe's.
const envSockets = "GATEHOUSE_UPGRADE_SOCKETS"

// Socket is a listening socket with the address the configuration gives
// it (the key a new configuration looks it up by).
type Socket struct {
	Addr     string
	Listener net.Listener
}

// Inherited returns the sockets a parent handed over, by configured
// address, and ready, which tells the parent this process serves; in a
// process started afresh it returns no sockets and a nil ready (there is
// nobody to tell, and the caller must not announce a handover).
func Inherited() (map[string]net.Listener, func() error, error) {
	spec, ok := os.LookupEnv(envSockets)
	if !ok {
		return nil, nil, nil
	}
	os.Unsetenv(envSockets) // a later upgrade of this process sets its own
	addrs := []string{}
	if spec != "" {
		addrs = strings.Split(spec, ",")
	}
	sockets := make(map[string]net.Listener, len(addrs))
	for i, addr := range addrs {
		f := os.NewFile(uintptr(3+i), "inherited "+addr)
		ln, err := net.FileListener(f)
		f.Close() // FileListener holds its own duplicate
		if err != nil {
			closeAll(sockets)
			return nil, nil, fmt.Errorf("upgrade: inherited socket %s: %w", addr, err)
		}
		sockets[addr] = ln
	}
	pipe := os.NewFile(uintptr(3+len(addrs)), "upgrade ready pipe")
	ready := func() error {
		defer pipe.Close()
		_, err := pipe.WriteString("ready\n")
		return err
	}
	return sockets, ready, nil
}

// Start runs exe with args as the new gatehouse, handing it sockets, and
// returns once it is ready to serve. When it exits first, or is not ready
// within timeout, it is killed and Start returns an error: the caller
// keeps serving. The sockets must stay open until Start returns.
//
// The process is started with syscall.ForkExec on the sockets' own
// descriptors: os/exec would pass them through os.File.Fd, which puts the
// open file description — shared with this process's listeners — into
// blocking mode, and a listener in blocking mode can no longer be woken
// from Accept (this process's Release would hang).
func Start(exe string, args []string, sockets []Socket, timeout time.Duration) (*os.Process, error) {
	fds, names, err := socketFDs(sockets)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	defer r.Close()
	pid, err := forkExec(exe, args, append(fds, w.Fd()), envSockets+"="+strings.Join(names, ","))
	w.Close() // the child holds its own copy
	if err != nil {
		return nil, fmt.Errorf("upgrade: start %s: %w", exe, err)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	exited := make(chan struct{})
	go func() { proc.Wait(); close(exited) }() // reaps it whenever it exits
	if err := awaitReady(r, exited, timeout); err != nil {
		proc.Kill()
		return nil, err
	}
	return proc, nil
}

// forkExec starts exe with standard input, output and error, then files
// as descriptors 3, 4, … and env added to this process's environment.
func forkExec(exe string, args []string, files []uintptr, env string) (int, error) {
	return syscall.ForkExec(exe, append([]string{exe}, args...), &syscall.ProcAttr{
		Env:   append(os.Environ(), env),
		Files: append([]uintptr{0, 1, 2}, files...),
	})
}

// awaitReady waits for the new process's "ready" line.
func awaitReady(r *os.File, exited <-chan struct{}, timeout time.Duration) error {
	got := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("said %q", line)
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			return fmt.Errorf("upgrade: the new process did not become ready (it exited or failed to start: see its log): %w", err)
		}
		return nil
	case <-exited:
		return errors.New("upgrade: the new process exited before it was ready (see its log)")
	case <-time.After(timeout):
		return fmt.Errorf("upgrade: the new process was not ready within %s", timeout)
	}
}

// socketFDs returns each socket's descriptor and name.
func socketFDs(sockets []Socket) ([]uintptr, []string, error) {
	var fds []uintptr
	var names []string
	for _, s := range sockets {
		if strings.Contains(s.Addr, ",") {
			return nil, nil, fmt.Errorf("upgrade: address %q cannot be named", s.Addr)
		}
		sc, ok := s.Listener.(syscall.Conn)
		if !ok {
			return nil, nil, fmt.Errorf("upgrade: socket %s cannot be handed over (%T)", s.Addr, s.Listener)
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return nil, nil, fmt.Errorf("upgrade: socket %s: %w", s.Addr, err)
		}
		var fd uintptr
		if err := rc.Control(func(d uintptr) { fd = d }); err != nil {
			return nil, nil, fmt.Errorf("upgrade: socket %s: %w", s.Addr, err)
		}
		fds = append(fds, fd)
		names = append(names, s.Addr)
	}
	return fds, names, nil
}

func closeAll(m map[string]net.Listener) {
	for _, ln := range m {
		ln.Close()
	}
}

// PID reads a pidfile.
func PID(pidfile string) (int, error) {
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: not a process id: %q", pidfile, b)
	}
	return pid, nil
}
