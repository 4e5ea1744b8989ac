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
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
// process started afresh it returns no sockets and a ready that does
// nothing.
func Inherited() (map[string]net.Listener, func() error, error) {
	spec, ok := os.LookupEnv(envSockets)
	if !ok {
		return nil, func() error { return nil }, nil
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
// keeps serving.
func Start(exe string, args []string, sockets []Socket, timeout time.Duration) (*os.Process, error) {
	files, names, err := socketFiles(sockets)
	defer closeFiles(files)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = append(files, w)
	cmd.Env = append(os.Environ(), envSockets+"="+strings.Join(names, ","))
	err = cmd.Start()
	w.Close() // the child holds its own copy
	if err != nil {
		return nil, fmt.Errorf("upgrade: start %s: %w", exe, err)
	}
	if err := awaitReady(cmd, r, timeout); err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	go cmd.Wait() // reap it should it exit while this process still runs
	return cmd.Process, nil
}

// awaitReady waits for the new process's "ready" line.
func awaitReady(cmd *exec.Cmd, r *os.File, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
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
	case <-ctx.Done():
		r.Close()
		return fmt.Errorf("upgrade: the new process was not ready within %s", timeout)
	}
}

// socketFiles duplicates each socket's descriptor for the new process.
func socketFiles(sockets []Socket) ([]*os.File, []string, error) {
	var files []*os.File
	var names []string
	for _, s := range sockets {
		fl, ok := s.Listener.(interface{ File() (*os.File, error) })
		if !ok {
			return files, nil, fmt.Errorf("upgrade: socket %s cannot be handed over (%T)", s.Addr, s.Listener)
		}
		if strings.Contains(s.Addr, ",") {
			return files, nil, fmt.Errorf("upgrade: address %q cannot be named", s.Addr)
		}
		f, err := fl.File()
		if err != nil {
			return files, nil, fmt.Errorf("upgrade: socket %s: %w", s.Addr, err)
		}
		files = append(files, f)
		names = append(names, s.Addr)
	}
	return files, names, nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
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
