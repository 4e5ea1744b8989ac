// Command gatebench drives the L4 and TLS handshake benchmarks behind `make
// bench`: it runs the back-ends a proxy under test sits in front of and the
// client loads that go through it, and prints each figure as key=value pairs
// for bench/l4.sh and bench/tls.sh.
//
// Usage:
//
//	gatebench sink     -listen ADDR                           # discard, then acknowledge the count
//	gatebench echo     -listen ADDR                           # echo every byte back
//	gatebench stream   -target ADDR -bytes N                  # one long upload: bytes, seconds, GB/s
//	gatebench connrate -target ADDR -workers 8 -duration 5s   # short proxied sessions per second
//	gatebench idle     -target ADDR -n 5000 -hold 10s         # hold idle sessions, print READY
//	gatebench tlsrate  -target ADDR -version 1.3 [-resume]    # proxied TLS handshakes per second
//	gatebench freeport -n K                                   # K free loopback ports below the ephemeral range
//
// The servers print "LISTEN <addr>" once listening and stop on SIGINT or
// SIGTERM. Every load is bounded by its own timeouts. All traffic is meant for
// 127.0.0.0/8.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// errUsage reports a command line gatebench does not understand.
var errUsage = errors.New("usage: gatebench sink|echo|stream|connrate|idle|tlsrate|freeport [flags]")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gatebench:", err)
		os.Exit(1)
	}
}

// run dispatches one subcommand; results go to out.
func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "sink":
		return sinkCmd(ctx, rest, out)
	case "echo":
		return echoCmd(ctx, rest, out)
	case "stream":
		return streamCmd(ctx, rest, out)
	case "connrate":
		return connrateCmd(ctx, rest, out)
	case "idle":
		return idleCmd(ctx, rest, out)
	case "tlsrate":
		return tlsrateCmd(ctx, rest, out)
	case "freeport":
		return freeportCmd(rest, out)
	}
	return fmt.Errorf("unknown command %q: %w", cmd, errUsage)
}
