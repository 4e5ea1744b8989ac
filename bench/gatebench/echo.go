package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// echoBufSize is the echo back-end's buffer per connection; the loads that
// use it send only a few bytes at a time.
const echoBufSize = 2 << 10

// echoCmd runs the echo back-end: every byte a connection sends is written
// back to it, until the client closes.
func echoCmd(ctx context.Context, args []string, out io.Writer) error {
	addr, err := listenFlags("echo", args)
	if err != nil {
		return err
	}
	return listenAndServe(ctx, addr, out, echoConn)
}

// echoConn copies c back to itself until EOF or an error.
func echoConn(c net.Conn) {
	buf := make([]byte, echoBufSize)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// roundTrip writes payload to an echo back-end (through whatever proxy lies
// between) and checks that exactly the same bytes come back.
func roundTrip(c net.Conn, payload []byte) error {
	if _, err := c.Write(payload); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo returned %q, sent %q", got, payload)
	}
	return nil
}

// tag returns an 8-byte payload unique to (worker, seq), so that an echo
// answered on the wrong connection is caught.
func tag(worker int, seq uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(worker)<<48|seq&(1<<48-1))
	return b
}
