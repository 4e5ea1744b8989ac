// Command gatehouse is a protocol-aware edge proxy for mail and web: it
// balances SMTP, POP3, IMAP and HTTPS over a farm of Exchange or
// Postfix/Dovecot servers with health checks that speak each protocol.
//
// Usage:
//
//	gatehouse run -config FILE       serve the configuration
//	gatehouse validate [-offline] FILE
//	                                 check a configuration as run would, print FILE:LINE:COL: problems
//	gatehouse reload [-pidfile F]    make a running gatehouse re-read its configuration
//	gatehouse upgrade [-pidfile F]   replace a running gatehouse with the binary on disk, sessions kept
//	gatehouse demo                   run gatehouse in front of built-in demo back-ends
//	gatehouse probe [flags] URL      check one service once (Nagios/JSON output)
//	gatehouse tls export-ca          print the local CA's root certificate
//	gatehouse version                print the version
//
// It may import every gatehouse package; nothing imports it.
package main

import (
	"fmt"
	"os"
)

// version and commit are set at build time with -ldflags "-X main.version=…".
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run dispatches a subcommand and returns the process exit code.
func run(args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:])
	case "validate":
		return cmdValidate(args[1:], os.Stdout, os.Stderr)
	case "demo":
		return cmdDemo(args[1:])
	case "probe":
		return cmdProbe(args[1:], os.Stdout)
	case "tls":
		return cmdTLS(args[1:])
	case "reload":
		return cmdReload(args[1:])
	case "upgrade":
		return cmdUpgrade(args[1:])
	case "version", "-version", "--version":
		fmt.Printf("gatehouse %s (commit %s)\n", version, commit)
		return 0
	case "help", "-h", "-help", "--help":
		usage()
		return 0
	}
	fmt.Fprintf(os.Stderr, "gatehouse: unknown command %q\n", args[0])
	usage()
	return 2
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  gatehouse run -config FILE       serve the configuration
  gatehouse validate [-offline] FILE
                                   check a configuration as run would (also -config FILE);
                                   -offline: the file alone, no certificate/map files, no DNS
  gatehouse reload [-pidfile FILE | -admin ADDR]
                                   make a running gatehouse re-read its configuration
  gatehouse upgrade [-pidfile FILE]
                                   replace a running gatehouse with the binary on disk;
                                   live sessions finish in the old process
  gatehouse demo                   run in front of built-in demo back-ends
  gatehouse probe [flags] URL      check one service once: smtp://host:25?starttls=1,
                                   pop3s://, imaps://, https://host/owa/healthcheck.htm, tcp://…
  gatehouse tls export-ca [-config FILE | -demo]
                                   print the local CA's root certificate (PEM)
  gatehouse version                print the version
`)
}
