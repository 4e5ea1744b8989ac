package main

import (
	"context"
	stdtls "crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/health"
)

// Nagios plugin exit codes.
const (
	nagiosOK       = 0
	nagiosWarning  = 1
	nagiosCritical = 2
	nagiosUnknown  = 3
)

// probeResult is what `gatehouse probe` reports, in every format.
type probeResult struct {
	URL      string  `json:"url"`
	Kind     string  `json:"kind"`
	Addr     string  `json:"addr"`
	OK       bool    `json:"ok"`
	Stage    string  `json:"stage,omitempty"`
	Error    string  `json:"error,omitempty"`
	Seconds  float64 `json:"seconds"`
	Warning  bool    `json:"warning,omitempty"`
	ExitCode int     `json:"exit_code"`
}

// cmdProbe checks one service once, with the same probes the health
// monitor runs, for cron jobs and monitoring systems.
func cmdProbe(args []string, stdout io.Writer) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	warn := fs.Duration("warning", 0, "exit WARNING when the probe is slower than this (0: never)")
	format := fs.String("format", "text", "output: text, nagios or json")
	status := fs.Int("expect-status", 0, "http(s): wanted status (default 200)")
	body := fs.String("expect-body", "", "http(s): substring the body must contain")
	insecure := fs.Bool("insecure", false, "do not verify the server's TLS certificate")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: gatehouse probe [flags] smtp://host:25?starttls=1 | smtps:// | pop3:// | pop3s:// | imap:// | imaps:// | https://host/owa/healthcheck.htm | http:// | tcp://host:port")
		return nagiosUnknown
	}
	res := runProbe(fs.Arg(0), *timeout, probeFlags{status: *status, body: *body, insecure: *insecure})
	if res.OK && *warn > 0 && res.Seconds > warn.Seconds() {
		res.Warning, res.ExitCode = true, nagiosWarning
	}
	printProbe(stdout, *format, res)
	return res.ExitCode
}

type probeFlags struct {
	status   int
	body     string
	insecure bool
}

// runProbe parses the URL, builds the probe and runs it once.
func runProbe(raw string, timeout time.Duration, f probeFlags) probeResult {
	res := probeResult{URL: raw, ExitCode: nagiosUnknown}
	kind, addr, opts, err := parseProbeURL(raw, f)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Kind, res.Addr = kind, addr
	p, err := health.New(kind, opts)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err = p.Probe(ctx, addr)
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		res.Error, res.ExitCode = err.Error(), nagiosCritical
		var he *health.Error
		if errors.As(err, &he) {
			res.Stage = he.Stage
		}
		return res
	}
	res.OK, res.ExitCode = true, nagiosOK
	return res
}

// schemes maps URL schemes to probe kinds, implicit TLS and default ports.
var schemes = map[string]struct {
	kind     string
	implicit bool
	port     string
}{
	"tcp":   {"tcp", false, ""},
	"tls":   {"tls", false, ""},
	"smtp":  {"smtp", false, "25"},
	"smtps": {"smtp", true, "465"},
	"pop3":  {"pop3", false, "110"},
	"pop3s": {"pop3", true, "995"},
	"imap":  {"imap", false, "143"},
	"imaps": {"imap", true, "993"},
	"http":  {"http", false, "80"},
	"https": {"https", false, "443"},
}

func parseProbeURL(raw string, f probeFlags) (kind, addr string, o health.Options, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", o, fmt.Errorf("bad URL: %w", err)
	}
	s, ok := schemes[u.Scheme]
	if !ok {
		return "", "", o, fmt.Errorf("unknown scheme %q", u.Scheme)
	}
	addr = u.Host
	if u.Port() == "" {
		if s.port == "" {
			return "", "", o, fmt.Errorf("%s:// needs a port", u.Scheme)
		}
		addr = net.JoinHostPort(u.Hostname(), s.port)
	}
	o.ImplicitTLS = s.implicit
	o.StartTLS = u.Query().Get("starttls") == "1"
	if s.implicit || o.StartTLS || s.kind == "https" || s.kind == "tls" {
		o.TLSConfig = &stdtls.Config{ServerName: u.Hostname(), InsecureSkipVerify: f.insecure}
	}
	if s.kind == "http" || s.kind == "https" {
		o.Path, o.Host, o.ExpectStatus, o.ExpectBody = u.RequestURI(), u.Host, f.status, f.body
	}
	return s.kind, addr, o, nil
}

// printProbe writes the result as text, a Nagios plugin line or JSON.
func printProbe(w io.Writer, format string, r probeResult) {
	switch format {
	case "json":
		json.NewEncoder(w).Encode(r)
	case "nagios":
		state := [...]string{"OK", "WARNING", "CRITICAL", "UNKNOWN"}[r.ExitCode]
		what := fmt.Sprintf("%s answered in %.3fs", r.Addr, r.Seconds)
		if r.Error != "" {
			what = r.Error
		}
		fmt.Fprintf(w, "%s %s - %s | time=%.6fs;;;0\n", strings.ToUpper(r.Kind), state, what, r.Seconds)
	default:
		if r.OK {
			fmt.Fprintf(w, "ok: %s %s in %.3fs\n", r.Kind, r.Addr, r.Seconds)
		} else {
			fmt.Fprintf(w, "failed: %s %s: %s\n", r.Kind, r.Addr, r.Error)
		}
	}
}
