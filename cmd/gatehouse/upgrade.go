package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/gatehouse-proxy/gatehouse"
	"github.com/gatehouse-proxy/gatehouse/upgrade"
)

// upgradeReadyTimeout bounds how long a new binary may take to serve.
const upgradeReadyTimeout = time.Minute

// announce tells whoever watches that this process serves: the pidfile,
// systemd (READY, and MAINPID after an upgrade, so the unit follows the
// new process), and the gatehouse this one replaces.
func (r *runner) announce() error {
	if r.pidFile != "" {
		if err := os.WriteFile(r.pidFile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
			return fmt.Errorf("pidfile: %w", err)
		}
	}
	if r.upgraded == nil {
		notify(daemon.SdNotifyReady)
		return nil
	}
	notify(fmt.Sprintf("MAINPID=%d\n%s", os.Getpid(), daemon.SdNotifyReady))
	if err := r.upgraded(); err != nil {
		return fmt.Errorf("telling the replaced gatehouse: %w", err)
	}
	r.log.Info("serving on the sockets of the replaced gatehouse", "inherited", len(r.inherited))
	return nil
}

// removePidFile removes the pidfile unless a newer process owns it now.
func (r *runner) removePidFile() {
	if r.pidFile == "" {
		return
	}
	if pid, err := upgrade.PID(r.pidFile); err == nil && pid == os.Getpid() {
		os.Remove(r.pidFile)
	}
}

// upgrade starts the binary anew on this process's sockets and reports
// whether it took over; when it did not, this process goes on serving.
func (r *runner) upgrade(srv *gatehouse.Server) bool {
	if r.path == "" {
		r.log.Warn("SIGUSR2 ignored: upgrade needs `gatehouse run -config FILE`")
		return false
	}
	exe, err := os.Executable()
	if err != nil {
		r.upgradeFailed(err)
		return false
	}
	r.log.Info("upgrade: starting the new binary", "exe", exe)
	var proc *os.Process
	err = srv.WithSockets(func(sockets []upgrade.Socket) (err error) {
		proc, err = upgrade.Start(exe, os.Args[1:], sockets, upgradeReadyTimeout)
		return err
	})
	if err != nil {
		r.upgradeFailed(err)
		return false
	}
	r.log.Info("upgrade: the new process serves; this one finishes its live sessions", "pid", proc.Pid, "upgrade_grace", srv.UpgradeGrace())
	return true
}

// upgradeFailed logs why an upgrade did not happen and writes the
// pidfile again (the same process id, a new modification time), which is
// how `gatehouse upgrade` learns at once that this process goes on.
func (r *runner) upgradeFailed(err error) {
	r.log.Error("upgrade failed; this process keeps serving", "err", err)
	if r.pidFile != "" {
		os.WriteFile(r.pidFile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644)
	}
}

// finishSessions stops accepting (the new process does), waits up to
// upgrade_grace for live sessions to end, then says goodbye to the rest.
// SIGTERM or SIGINT cuts the wait short.
func (r *runner) finishSessions(srv *gatehouse.Server, sigs <-chan os.Signal) int {
	srv.HandOver()
	ctx, cancel := context.WithTimeout(context.Background(), srv.UpgradeGrace())
	defer cancel()
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				cancel()
				return
			}
		}
	}()
	if n := srv.WaitSessions(ctx); n > 0 {
		r.log.Warn("upgrade_grace over: closing the remaining sessions", "sessions", n)
	}
	return r.stop(srv, time.Second)
}

// notify sends a state to systemd when it runs gatehouse as a notify
// service; elsewhere it does nothing.
func notify(state string) {
	daemon.SdNotify(false, state)
}

// cmdUpgrade asks a running gatehouse to replace itself with the binary
// now on disk (SIGUSR2), and waits until the new process owns the pidfile.
func cmdUpgrade(args []string) int {
	fs := flag.NewFlagSet("upgrade", flag.ContinueOnError)
	pidFile := fs.String("pidfile", "/run/gatehouse/gatehouse.pid", "the running gatehouse's pidfile (`gatehouse run -pidfile`)")
	wait := fs.Duration("wait", 90*time.Second, "how long to wait for the new process")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	old, err := upgrade.PID(*pidFile)
	var before time.Time
	if err == nil {
		before = modTime(*pidFile)
		err = syscall.Kill(old, syscall.SIGUSR2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "upgrade:", err)
		return 1
	}
	deadline := time.Now().Add(*wait)
	for time.Now().Before(deadline) {
		pid, err := upgrade.PID(*pidFile)
		if err == nil && pid != old {
			fmt.Printf("upgraded: process %d serves; %d finishes its live sessions\n", pid, old)
			return 0
		}
		if err == nil && modTime(*pidFile).After(before) { // the old process wrote it again: it failed
			fmt.Fprintf(os.Stderr, "upgrade: the new binary did not start (see the log of %d); %d still serves\n", old, old)
			return 1
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "upgrade: no new process took over from %d within %s (see its log); %d still serves\n", old, *wait, old)
	return 1
}

// modTime returns a file's modification time (zero when it cannot be read).
func modTime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}
