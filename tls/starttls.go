package tls

import (
	"bufio"
	stdtls "crypto/tls"
	"fmt"
	"net"
)

// ServerStartTLS upgrades conn to TLS as the server, after the frontend has
// sent its go-ahead (SMTP "220", POP3 "+OK", IMAP tagged "OK").
//
// conn must be the raw connection, not the reader: every byte the client
// pipelined after STARTTLS/STLS and that sits in pending is discarded and
// counted in discarded, never executed (command injection, CVE-2011-0411;
// RFC 3207 section 4.2, RFC 2595 section 3.1). Pipelined bytes still in the
// kernel become part of the handshake and make it fail, which is the safe
// outcome. pending may be nil. The handshake honours conn's deadline.
//
// The frontend must build a new reader on tc and forget what it learned
// before TLS (EHLO name, capabilities). On error it closes conn.
func ServerStartTLS(conn net.Conn, pending *bufio.Reader, cfg *stdtls.Config) (tc *stdtls.Conn, discarded int, err error) {
	discarded = discard(pending, "server")
	tc, err = ServerHandshake(conn, cfg)
	if err != nil {
		return nil, discarded, fmt.Errorf("starttls: %w", err)
	}
	return tc, discarded, nil
}

// ClientStartTLS upgrades conn to TLS as the client of a back-end, after the
// back-end's go-ahead was read from pending. Whatever the back-end sent after
// its go-ahead is discarded and counted (response injection): no legitimate
// server sends anything there, so a frontend may treat discarded > 0 as a
// reason to give up on that back-end. The handshake honours conn's deadline.
// On error the caller closes conn.
func ClientStartTLS(conn net.Conn, pending *bufio.Reader, cfg *stdtls.Config) (*stdtls.Conn, int, error) {
	discarded := discard(pending, "client")
	tc := stdtls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, discarded, fmt.Errorf("starttls to %s: %w", conn.RemoteAddr(), err)
	}
	return tc, discarded, nil
}

// ServerHandshake runs the server side of a TLS handshake on conn, for
// implicit-TLS listeners and for ServerStartTLS, honouring conn's deadline.
// Failures are counted in gatehouse_tls_handshakes_total{result="failed"}.
func ServerHandshake(conn net.Conn, cfg *stdtls.Config) (*stdtls.Conn, error) {
	tc := stdtls.Server(conn, cfg)
	if err := tc.Handshake(); err != nil {
		handshakes.WithLabelValues("failed").Inc()
		return nil, fmt.Errorf("tls handshake with %s: %w", conn.RemoteAddr(), err)
	}
	return tc, nil
}

// discard throws away what r has buffered without reading further, and
// returns how many bytes that was.
func discard(r *bufio.Reader, side string) int {
	if r == nil {
		return 0
	}
	n, _ := r.Discard(r.Buffered()) // cannot fail: the bytes are buffered
	if n > 0 {
		startTLSDiscards.WithLabelValues(side).Inc()
	}
	return n
}
