package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/gatehouse-proxy/gatehouse/config"
)

// logWarnings logs what the checker found worth a warning.
func logWarnings(log *slog.Logger, warnings config.Problems) {
	for _, w := range warnings {
		log.Warn("configuration: "+w.Msg, "at", fmt.Sprintf("%s:%d:%d", w.File, w.Line, w.Col))
	}
}

// cmdValidate checks a configuration with the checks `run` runs before it
// binds: exit 0, or 1 with one FILE:LINE:COL: message line per problem.
// Warnings are printed the same way and do not change the exit code.
func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/gatehouse/gatehouse.yaml", "configuration file (or give it as the argument)")
	offline := fs.Bool("offline", false, "check the file alone: no certificate, key, map or CA file, no DNS")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if rest := fs.Args(); len(rest) > 0 { // validate FILE, flags before or after it
		if err := fs.Parse(rest[1:]); err != nil {
			return 2
		}
		configSet := false
		fs.Visit(func(f *flag.Flag) { configSet = configSet || f.Name == "config" })
		if configSet || fs.NArg() > 0 {
			fmt.Fprintln(stderr, "usage: gatehouse validate [-offline] FILE (or -config FILE): one file")
			return 2
		}
		*path = rest[0]
	}
	_, warnings, err := config.Load(context.Background(), *path, config.CheckOptions{Offline: *offline})
	for _, w := range warnings {
		fmt.Fprintln(stderr, w.Error())
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
}
