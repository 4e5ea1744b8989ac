package main

import (
	"context"
	"fmt"
	"io"
	"net"
)

// sinkBufSize is the read size of the sink and the write size of the stream
// load: large, so that neither end costs more system calls than the proxy.
const sinkBufSize = 256 << 10

// sinkCmd runs the sink back-end: it discards everything a connection sends
// and, once the client half-closes, answers with the number of bytes it
// received as one decimal line, then closes. The answer lets the stream load
// stop its clock only when every byte has crossed the proxy, and check that
// none was lost.
func sinkCmd(ctx context.Context, args []string, out io.Writer) error {
	addr, err := listenFlags("sink", args)
	if err != nil {
		return err
	}
	return listenAndServe(ctx, addr, out, sinkConn)
}

// sinkConn reads c to its end and acknowledges the count.
func sinkConn(c net.Conn) {
	buf := make([]byte, sinkBufSize)
	var n int64
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return
		}
	}
	fmt.Fprintf(c, "%d\n", n)
}
