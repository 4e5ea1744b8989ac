package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse-proxy/gatehouse"
)

// cmdRun serves a configuration until SIGTERM or SIGINT, then drains.
// SIGHUP re-reads the file and applies it without dropping sessions.
func cmdRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", "/etc/gatehouse/gatehouse.yaml", "configuration file")
	pidFile := fs.String("pidfile", "", "write the process id here (for `gatehouse reload -pidfile`)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := gatehouse.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(os.Stderr, "%s: warning: %s\n", *path, w)
	}
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "pidfile:", err)
			return 1
		}
		defer os.Remove(*pidFile)
	}
	return serve(cfg, *path, nil)
}

// serve runs cfg until a stop signal; ready, if set, is called once the
// listeners accept. With a path, SIGHUP and POST /api/reload reload it.
func serve(cfg *gatehouse.Config, path string, ready func(*gatehouse.Server)) int {
	log := gatehouse.NewLogger(cfg.Log, os.Stderr)
	srv, err := gatehouse.NewServer(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	reload := func() error { return reloadFile(srv, path, log) }
	if path != "" {
		srv.SetReloader(reload)
	}
	srv.Start()
	if ready != nil {
		ready(srv)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for sig := range stop {
		if sig != syscall.SIGHUP {
			break
		}
		if path == "" {
			log.Warn("SIGHUP ignored: no configuration file to reload")
			continue
		}
		reload()
	}
	signal.Stop(stop)
	log.Info("stopping: draining live sessions", "grace", cfg.ShutdownGrace)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Error("shutdown", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// reloadFile re-reads the configuration file and applies it; an invalid
// file is refused with every problem logged, and the running
// configuration stays.
func reloadFile(srv *gatehouse.Server, path string, log *slog.Logger) error {
	cfg, err := gatehouse.LoadConfig(path)
	if err != nil {
		var ps gatehouse.Problems
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

// cmdValidate checks a configuration: exit 0, or 1 with one
// FILE:LINE:COL: message line per problem.
func cmdValidate(args []string) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	path := fs.String("config", "/etc/gatehouse/gatehouse.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := gatehouse.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(os.Stderr, "%s: warning: %s\n", *path, w)
	}
	fmt.Printf("%s: ok\n", *path)
	return 0
}
