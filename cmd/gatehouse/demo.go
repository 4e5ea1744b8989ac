package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/gatehouse-proxy/gatehouse"
	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/examples"
	"github.com/gatehouse-proxy/gatehouse/internal/demo"
)

// cmdDemo runs gatehouse with examples/demo.yaml in front of the built-in
// demo back-ends, all on loopback.
func cmdDemo(args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Parse("examples/demo.yaml", examples.Demo)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	backends, err := demo.Start(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo back-ends:", err)
		return 1
	}
	defer backends.Close()
	return serve(cfg, "", func(srv *gatehouse.Server) {
		fmt.Print(demo.Banner(cfg, srv))
	})
}
