package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// streamOptions configures the stream load.
type streamOptions struct {
	Target  string        // proxy (or sink) address
	Bytes   int64         // bytes to send; must be positive
	Timeout time.Duration // bound on the whole transfer, acknowledgement included
}

// streamResult is what one stream measured.
type streamResult struct {
	Bytes   int64         // bytes the sink acknowledged
	Elapsed time.Duration // from the first byte written to the acknowledgement
}

// GBps is the throughput in decimal gigabytes (1e9 bytes) per second.
func (r streamResult) GBps() float64 {
	return float64(r.Bytes) / 1e9 / r.Elapsed.Seconds()
}

// streamCmd parses flags, runs one stream and prints its figures.
func streamCmd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("stream", flag.ContinueOnError)
	var o streamOptions
	fs.StringVar(&o.Target, "target", "", "address to stream to (proxy or sink)")
	fs.Int64Var(&o.Bytes, "bytes", 2_000_000_000, "bytes to send")
	fs.DurationVar(&o.Timeout, "timeout", 120*time.Second, "bound on the whole transfer")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	r, err := streamLoad(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "bytes=%d seconds=%.4f gbps=%.3f\n", r.Bytes, r.Elapsed.Seconds(), r.GBps())
	return nil
}

// streamLoad sends o.Bytes over one connection to a sink, half-closes, and
// waits for the sink's count of what arrived, which must match.
func streamLoad(ctx context.Context, o streamOptions) (streamResult, error) {
	if o.Target == "" || o.Bytes <= 0 || o.Timeout <= 0 {
		return streamResult{}, fmt.Errorf("stream: need -target, a positive -bytes and -timeout")
	}
	deadline := time.Now().Add(o.Timeout)
	d := net.Dialer{Deadline: deadline}
	c, err := d.DialContext(ctx, "tcp", o.Target)
	if err != nil {
		return streamResult{}, fmt.Errorf("stream: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	c.SetDeadline(deadline)

	start := time.Now()
	if err := sendZeros(c, o.Bytes); err != nil {
		return streamResult{}, fmt.Errorf("stream to %s: %w", o.Target, err)
	}
	n, err := readAck(c)
	if err != nil {
		return streamResult{}, fmt.Errorf("stream to %s: waiting for the sink's count: %w", o.Target, err)
	}
	r := streamResult{Bytes: n, Elapsed: time.Since(start)}
	if n != o.Bytes {
		return r, fmt.Errorf("stream to %s: sent %d bytes, sink received %d", o.Target, o.Bytes, n)
	}
	return r, nil
}

// sendZeros writes total zero bytes to c in large writes, then half-closes
// c so that the sink sees the end.
func sendZeros(c net.Conn, total int64) error {
	buf := make([]byte, sinkBufSize)
	for sent := int64(0); sent < total; {
		n, err := c.Write(buf[:min(int64(len(buf)), total-sent)])
		sent += int64(n)
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", sent, err)
		}
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("%T cannot half-close", c)
	}
	if err := cw.CloseWrite(); err != nil {
		return fmt.Errorf("half-close: %w", err)
	}
	return nil
}

// readAck reads the sink's one-line decimal byte count.
func readAck(c net.Conn) (int64, error) {
	line, err := bufio.NewReaderSize(c, 64).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("read %q: %w", line, err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad count %q: %w", line, err)
	}
	return n, nil
}
