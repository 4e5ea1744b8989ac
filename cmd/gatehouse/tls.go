package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/examples"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// cmdTLS runs `gatehouse tls export-ca`: it prints the local CA's root
// certificate (PEM) of a self-signed certificate set, so that testers can
// trust what gatehouse serves.
func cmdTLS(args []string) int {
	if len(args) == 0 || args[0] != "export-ca" {
		fmt.Fprintln(os.Stderr, "usage: gatehouse tls export-ca [-config FILE | -demo] [-certificates NAME]")
		return 2
	}
	fs := flag.NewFlagSet("tls export-ca", flag.ContinueOnError)
	path := fs.String("config", "/etc/gatehouse/gatehouse.yaml", "configuration file")
	demo := fs.Bool("demo", false, "use the demo's configuration (examples/demo.yaml)")
	set := fs.String("certificates", "", "certificate set (default: the default set)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	var cfg *config.Config
	var err error
	if *demo {
		cfg, err = config.Parse("examples/demo.yaml", examples.Demo)
	} else {
		// Only the storage directory is wanted: the text alone is checked.
		cfg, _, err = config.Load(context.Background(), *path, config.CheckOptions{Offline: true})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	storage, err := config.CertificateStorage(cfg, *set)
	if err == nil {
		err = tls.ExportCA(storage, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "export-ca:", err)
		return 1
	}
	return 0
}
