package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gatehouse-proxy/gatehouse"
)

// cmdRun serves a configuration until SIGTERM or SIGINT, then drains.
func cmdRun(args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	path := fs.String("config", "/etc/gatehouse/gatehouse.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := gatehouse.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return serve(cfg, nil)
}

// serve runs cfg until a stop signal; ready, if set, is called once the
// listeners accept.
func serve(cfg *gatehouse.Config, ready func(*gatehouse.Server)) int {
	log := gatehouse.NewLogger(cfg.Log, os.Stderr)
	srv, err := gatehouse.NewServer(cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	srv.Start()
	if ready != nil {
		ready(srv)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	<-ctx.Done()
	stop()
	log.Info("stopping: draining live sessions", "grace", cfg.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Error("shutdown", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// cmdValidate checks a configuration: exit 0, or 1 with one
// FILE:LINE:COL: message line per problem.
func cmdValidate(args []string) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	path := fs.String("config", "/etc/gatehouse/gatehouse.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := gatehouse.LoadConfig(*path); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%s: ok\n", *path)
	return 0
}
