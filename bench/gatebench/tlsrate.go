package main

import (
	"bytes"
	"context"
	stdtls "crypto/tls"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// tlsrateOptions configures the TLS handshake-rate load.
type tlsrateOptions struct {
	Target     string        // TLS listener of a proxy in front of an echo back-end
	Version    string        // "1.3" or "1.2": the only version offered
	Resume     bool          // resume from a shared session cache; false: a full handshake every time
	ServerName string        // SNI to send; empty sends none
	CertFile   string        // PEM certificate the server must present; empty accepts any
	Workers    int           // sessions in flight at once
	Duration   time.Duration // how long workers start new sessions
	Timeout    time.Duration // bound on one session: dial, handshake, round trip
}

// tlsrateResult is what one handshake-rate run measured.
type tlsrateResult struct {
	connrateResult               // sessions, failures, elapsed time
	Resumed        int64         // completed sessions whose handshake resumed
	Params         negotiated    // what most sessions negotiated
	Other          int64         // completed sessions that negotiated something else
	ClientCPU      time.Duration // CPU time this process spent on the run
}

// negotiated is what a server chose in one handshake.
type negotiated struct {
	Version uint16
	Suite   uint16
	Curve   stdtls.CurveID // for a TLS 1.2 resumption, that of the session resumed
}

// String prints n as key=value pairs without spaces.
func (n negotiated) String() string {
	curve := "none"
	if n.Curve != 0 {
		curve = n.Curve.String()
	}
	version := strings.ReplaceAll(stdtls.VersionName(n.Version), " ", "")
	return fmt.Sprintf("version=%s suite=%s curve=%s", version, stdtls.CipherSuiteName(n.Suite), curve)
}

// tlsrateCmd parses flags, runs the load and prints its figures.
func tlsrateCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("tlsrate", flag.ContinueOnError)
	var o tlsrateOptions
	fs.StringVar(&o.Target, "target", "", "TLS address to connect to (a proxy in front of echo)")
	fs.StringVar(&o.Version, "version", "1.3", "TLS version to offer: 1.3 or 1.2")
	fs.BoolVar(&o.Resume, "resume", false, "keep a session cache and resume (default: a full handshake every time)")
	fs.StringVar(&o.ServerName, "servername", "", "SNI to send (default: none)")
	fs.StringVar(&o.CertFile, "cert", "", "PEM certificate the server must present (default: any)")
	fs.IntVar(&o.Workers, "workers", 8, "connecting workers")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "how long to open new sessions")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Second, "bound on one session")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("tlsrate: %w", err)
	}
	r, err := tlsrateLoad(ctx, o)
	if err != nil {
		return err
	}
	perSession := 0.0
	if r.Conns > 0 {
		perSession = float64(r.ClientCPU.Microseconds()) / float64(r.Conns)
	}
	fmt.Fprintf(out, "conns=%d seconds=%.3f rate=%.0f errors=%d resumed=%d %s other=%d client_cpu_us=%.0f\n",
		r.Conns, r.Elapsed.Seconds(), r.Rate(), r.Errors, r.Resumed, r.Params, r.Other, perSession)
	if r.FirstErr != nil {
		fmt.Fprintf(out, "# first error: %v\n", r.FirstErr)
	}
	return nil
}

// tlsrateLoad runs o.Workers loops that each, until o.Duration has passed,
// connect, complete a TLS handshake, exchange a unique 8-byte tag with the
// echo back-end behind the proxy and close. With o.Resume one session is
// made before the clock starts, so that every timed handshake can resume.
func tlsrateLoad(ctx context.Context, o tlsrateOptions) (tlsrateResult, error) {
	if o.Target == "" || o.Workers <= 0 || o.Duration <= 0 || o.Timeout <= 0 {
		return tlsrateResult{}, errors.New("tlsrate: need -target and positive -workers, -duration, -timeout")
	}
	cfg, err := tlsClientConfig(o)
	if err != nil {
		return tlsrateResult{}, err
	}
	d := &stdtls.Dialer{NetDialer: &net.Dialer{Timeout: o.Timeout}, Config: cfg}
	if o.Resume {
		if _, err := tlsSession(d, o.Target, o.Timeout, tag(o.Workers, 0)); err != nil {
			return tlsrateResult{}, fmt.Errorf("tlsrate: first session, for a ticket: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var t tally
	var h handshakes
	var wg sync.WaitGroup
	cpu0, start := cpuTime(), time.Now()
	for w := range o.Workers {
		wg.Go(func() { tlsrateWorker(ctx, d, o, w, &t, &h) })
	}
	wg.Wait()
	r := tlsrateResult{
		connrateResult: connrateResult{
			Conns: t.ok.Load(), Errors: t.bad.Load(), Elapsed: time.Since(start), FirstErr: t.firstErr(),
		},
		Resumed:   h.resumed.Load(),
		ClientCPU: cpuTime() - cpu0,
	}
	r.Params, r.Other = h.common()
	return r, nil
}

// tlsrateWorker opens one TLS session after another until ctx ends; a
// session under way when it ends is finished, not abandoned.
func tlsrateWorker(ctx context.Context, d *stdtls.Dialer, o tlsrateOptions, worker int, t *tally, h *handshakes) {
	for seq := uint64(0); ctx.Err() == nil; seq++ {
		cs, err := tlsSession(d, o.Target, o.Timeout, tag(worker, seq))
		t.record(err)
		if err == nil {
			h.record(cs)
		}
	}
}

// tlsSession is one short proxied TLS session: connect, handshake, a round
// trip with the echo back-end behind the proxy, close. The round trip also
// makes the client read the TLS 1.3 session tickets sent after the
// handshake.
func tlsSession(d *stdtls.Dialer, target string, timeout time.Duration, payload []byte) (stdtls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return stdtls.ConnectionState{}, fmt.Errorf("handshake: %w", err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(timeout))
	if err := roundTrip(nc, payload); err != nil {
		return stdtls.ConnectionState{}, fmt.Errorf("%s: %w", nc.LocalAddr(), err)
	}
	return nc.(*stdtls.Conn).ConnectionState(), nil
}

// tlsClientConfig builds the client side of the load: one TLS version, for
// TLS 1.2 the ECDHE-ECDSA-AES128-GCM-SHA256 suite only, X25519 and P-256
// only (the OpenSSL 3.0 of the peers knows no ML-KEM, so every server does
// the same key exchange), and either a session cache shared by all workers
// or no resumption at all.
func tlsClientConfig(o tlsrateOptions) (*stdtls.Config, error) {
	cfg := &stdtls.Config{
		ServerName: o.ServerName,
		// The certificate is compared with -cert below rather than verified:
		// chain building would add client work that is not the server's.
		InsecureSkipVerify: true,
		CurvePreferences:   []stdtls.CurveID{stdtls.X25519, stdtls.CurveP256},
	}
	switch o.Version {
	case "1.3":
		cfg.MinVersion, cfg.MaxVersion = stdtls.VersionTLS13, stdtls.VersionTLS13
	case "1.2":
		cfg.MinVersion, cfg.MaxVersion = stdtls.VersionTLS12, stdtls.VersionTLS12
		cfg.CipherSuites = []uint16{stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	default:
		return nil, fmt.Errorf("tlsrate: -version %q: want 1.3 or 1.2", o.Version)
	}
	if o.Resume {
		cfg.ClientSessionCache = stdtls.NewLRUClientSessionCache(o.Workers)
	} else {
		cfg.SessionTicketsDisabled = true
	}
	if o.CertFile != "" {
		want, err := readCertDER(o.CertFile)
		if err != nil {
			return nil, err
		}
		cfg.VerifyConnection = pinned(want)
	}
	return cfg, nil
}

// readCertDER returns the first certificate of a PEM file.
func readCertDER(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tlsrate: -cert: %w", err)
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("tlsrate: -cert %s: no CERTIFICATE block", file)
		}
		if blk.Type == "CERTIFICATE" {
			return blk.Bytes, nil
		}
	}
}

// pinned returns a VerifyConnection hook that accepts only the certificate
// want (DER), on full and resumed handshakes alike.
func pinned(want []byte) func(stdtls.ConnectionState) error {
	return func(cs stdtls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, want) {
			return errors.New("the server presented another certificate than -cert")
		}
		return nil
	}
}

// handshakes counts resumed sessions and what servers negotiated, from
// many goroutines.
type handshakes struct {
	resumed atomic.Int64

	mu   sync.Mutex
	seen map[negotiated]int64
}

// record counts one completed session.
func (h *handshakes) record(cs stdtls.ConnectionState) {
	if cs.DidResume {
		h.resumed.Add(1)
	}
	n := negotiated{Version: cs.Version, Suite: cs.CipherSuite, Curve: cs.CurveID}
	h.mu.Lock()
	if h.seen == nil {
		h.seen = make(map[negotiated]int64)
	}
	h.seen[n]++
	h.mu.Unlock()
}

// common returns what most sessions negotiated and how many negotiated
// something else.
func (h *handshakes) common() (best negotiated, other int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var most, total int64
	for n, c := range h.seen {
		total += c
		if c > most {
			best, most = n, c
		}
	}
	return best, total - most
}

// cpuTime is the user and system CPU time this process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
