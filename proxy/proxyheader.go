//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/pires/go-proxyproto"
)

// ProxyVersion returns the PROXY protocol version byte for a config value:
// "v1" → 1, "v2" → 2, "" or "none" → 0.
func ProxyVersion(s string) (byte, error) {
	switch s {
	case "", "none":
		return 0, nil
	case "v1":
		return 1, nil
	case "v2":
		return 2, nil
	}
	return 0, fmt.Errorf("unknown PROXY protocol version %q (want v1 or v2)", s)
}

// WriteProxyHeader sends a PROXY protocol header of the given version (1 or
// 2) naming src as the client and dst as the address it connected to. With
// src nil it sends a LOCAL header (v2) or "PROXY UNKNOWN" (v1), as health
// probes do.
func WriteProxyHeader(w io.Writer, version byte, src, dst net.Addr) error {
	var h *proxyproto.Header
	if src == nil || dst == nil {
		h = &proxyproto.Header{Version: version, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	} else {
		h = proxyproto.HeaderProxyFromAddrs(version, src, dst)
	}
	if _, err := h.WriteTo(w); err != nil {
		return fmt.Errorf("write PROXY v%d header: %w", version, err)
	}
	return nil
}

// maxV1Header is the longest v1 header the specification allows, CRLF included.
const maxV1Header = 107

// maxV2Body bounds the addresses and TLVs of a v2 header we accept.
const maxV2Body = 4096

// errNoProxyHeader is the refusal of a trusted-range client that sent none.
var errNoProxyHeader = errors.New("PROXY header required from this address, none sent")

// ReadProxyHeader reads one PROXY header (v1 or v2) from c within timeout.
//
// It reads exactly the header's bytes and no more, so that the socket
// stays a raw *net.TCPConn that Splice can hand to splice(2): go-proxyproto
// parses the header, but its own reader would buffer the bytes after it.
func ReadProxyHeader(c net.Conn, timeout time.Duration) (*proxyproto.Header, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	raw, err := readHeaderBytes(c)
	if err != nil {
		return nil, err
	}
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(raw), len(raw)+16))
	if err != nil {
		return nil, fmt.Errorf("bad PROXY header: %w", err)
	}
	return h, nil
}

// readHeaderBytes returns the raw bytes of one header.
func readHeaderBytes(c net.Conn) ([]byte, error) {
	head := make([]byte, 16, 64)
	// 8 bytes tell the versions apart and are within the shortest v1
	// header ("PROXY UNKNOWN\r\n", 15 bytes), so this never over-reads.
	if _, err := io.ReadFull(c, head[:8]); err != nil {
		return nil, fmt.Errorf("reading PROXY header: %w", err)
	}
	switch {
	case bytes.Equal(head[:8], proxyproto.SIGV2[:8]):
		return readV2(c, head)
	case bytes.HasPrefix(head[:8], []byte("PROXY ")):
		return readV1(c, head[:8])
	}
	return nil, errNoProxyHeader
}

func readV2(c net.Conn, head []byte) ([]byte, error) {
	if _, err := io.ReadFull(c, head[8:16]); err != nil {
		return nil, fmt.Errorf("reading PROXY v2 header: %w", err)
	}
	n := int(binary.BigEndian.Uint16(head[14:16]))
	if n > maxV2Body {
		return nil, fmt.Errorf("PROXY v2 header of %d bytes is too long", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, fmt.Errorf("reading PROXY v2 header: %w", err)
	}
	return append(head, body...), nil
}

// readV1 reads up to the LF one byte at a time: only trusted upstreams send
// this, once per connection, and it keeps the read exact.
func readV1(c net.Conn, line []byte) ([]byte, error) {
	var b [1]byte
	for len(line) < maxV1Header {
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return nil, fmt.Errorf("reading PROXY v1 header: %w", err)
		}
		line = append(line, b[0])
		if b[0] == '\n' {
			return line, nil
		}
	}
	return nil, errors.New("PROXY v1 header longer than 107 bytes")
}
