package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/gatehouse-proxy/gatehouse"
	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/upgrade"
)

// cmdRun serves a configuration until SIGTERM or SIGINT, then drains.
// SIGHUP re-reads the file and applies it without dropping sessions;
// SIGUSR2 starts the binary anew on the same sockets (see package upgrade).
func cmdRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", "/etc/gatehouse/gatehouse.yaml", "configuration file")
	pidFile := fs.String("pidfile", "", "write the process id here, for `gatehouse reload` and `gatehouse upgrade`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	inherited, ready, err := upgrade.Inherited()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg, warnings, err := config.Load(context.Background(), *path, config.CheckOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	logWarnings(gatehouse.NewLogger(cfg.Log, os.Stderr), warnings)
	r := &runner{cfg: cfg, path: *path, pidFile: *pidFile, inherited: inherited, upgraded: ready}
	return r.serve(nil)
}

// serve runs cfg until a stop signal; ready, if set, is called once the
// listeners accept. With a path, SIGHUP and POST /api/reload reload it.
func serve(cfg *config.Config, path string, ready func(*gatehouse.Server)) int {
	r := &runner{cfg: cfg, path: path}
	return r.serve(ready)
}

// runner is one `gatehouse run`: its configuration file, pidfile, and
// what a gatehouse it replaces handed over.
type runner struct {
	cfg       *config.Config
	path      string
	pidFile   string
	inherited map[string]net.Listener
	upgraded  func() error // tells the replaced gatehouse this one serves
	log       *slog.Logger
}

func (r *runner) serve(ready func(*gatehouse.Server)) int {
	r.log = gatehouse.NewLogger(r.cfg.Log, os.Stderr)
	srv, err := gatehouse.NewServerWith(r.cfg, r.log, gatehouse.Options{Inherited: r.inherited})
	if err != nil {
		r.log.Error("cannot start", "err", err)
		return 1
	}
	reload := func() error { return reloadFile(srv, r.path, r.log) }
	if r.path != "" {
		srv.SetReloader(reload)
	}
	// Signals are caught before the pidfile or systemd names this process:
	// a SIGHUP or SIGUSR2 sent the moment they do (a reload right after
	// start or after an upgrade) would otherwise end it (their default
	// action), after the replaced gatehouse has already let go.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(stop)
	srv.Start()
	if err := r.announce(); err != nil {
		r.log.Error("cannot start", "err", err)
		srv.Close()
		return 1
	}
	defer r.removePidFile()
	if ready != nil {
		ready(srv)
	}
	for sig := range stop {
		switch {
		case sig == syscall.SIGUSR2 && r.upgrade(srv):
			return r.finishSessions(srv, stop)
		case sig == syscall.SIGUSR2:
		case sig == syscall.SIGHUP && r.path == "":
			r.log.Warn("SIGHUP ignored: no configuration file to reload")
		case sig == syscall.SIGHUP:
			notify(daemon.SdNotifyReloading)
			reload()
			notify(daemon.SdNotifyReady)
		default:
			return r.stop(srv, srv.ShutdownGrace())
		}
	}
	return 0
}

// stop drains live sessions for grace, then closes what remains.
func (r *runner) stop(srv *gatehouse.Server, grace time.Duration) int {
	notify(daemon.SdNotifyStopping)
	r.log.Info("stopping: draining live sessions", "grace", grace)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		r.log.Error("shutdown", "err", err)
		return 1
	}
	r.log.Info("stopped")
	return 0
}

// reloadFile re-reads the configuration file and applies it; an invalid
// file is refused with every problem logged, and the running
// configuration stays.
func reloadFile(srv *gatehouse.Server, path string, log *slog.Logger) error {
	cfg, warnings, err := config.Load(context.Background(), path, config.CheckOptions{})
	logWarnings(log, warnings)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				log.Error("reload refused: invalid configuration", "problem", p.Error())
			}
		} else {
			log.Error("reload refused", "err", err)
		}
		return err
	}
	if err := srv.Reload(cfg); err != nil {
		log.Error("reload failed; the running configuration stays", "err", err)
		return err
	}
	return nil
}
