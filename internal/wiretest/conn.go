// Package wiretest holds what the tests of the mail frontends and of their
// test servers share: a raw line conversation over loopback for transcript
// tests, a TLS certificate for 127.0.0.1 and localhost, scripted
// connections for fuzz targets, real peers found on the machine, and checks
// that nothing a test started outlives it.
//
// It imports no gatehouse package, so that every package's tests can use
// it (proxy's own included).
package wiretest

import (
	"bufio"
	stdtls "crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// Wait bounds every read, write and dial a test makes.
const Wait = 5 * time.Second

// Conn is a raw conversation in a line protocol (POP3, IMAP, SMTP). Every
// method fails the test on an unexpected answer or a broken connection.
type Conn struct {
	net.Conn               // the socket, or TLS over it after StartTLS
	R        *bufio.Reader // reads Conn
	T        testing.TB    // the test the conversation fails
}

// NewConn starts a conversation on c, which the caller has bounded in time.
func NewConn(t testing.TB, c net.Conn) *Conn {
	return &Conn{Conn: c, R: bufio.NewReader(c), T: t}
}

// Dial connects to addr from 127.0.0.1.
func Dial(t testing.TB, addr string) *Conn { return DialFrom(t, "127.0.0.1", addr) }

// DialFrom connects to addr from the loopback address src, with every read
// and write bounded by Wait; the connection is closed when the test ends.
func DialFrom(t testing.TB, src, addr string) *Conn {
	t.Helper()
	d := net.Dialer{Timeout: Wait, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(Wait))
	t.Cleanup(func() { c.Close() })
	return NewConn(t, c)
}

// Send writes lines in one write, each ended by CRLF.
func (c *Conn) Send(lines ...string) {
	c.T.Helper()
	if _, err := c.Write([]byte(strings.Join(lines, "\r\n") + "\r\n")); err != nil {
		c.T.Fatalf("send %q: %v", lines, err)
	}
}

// Line reads one line, which must end in CRLF, and returns it without.
func (c *Conn) Line() string {
	c.T.Helper()
	l, err := c.R.ReadString('\n')
	if err != nil {
		c.T.Fatalf("read: %q, %v", l, err)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.T.Fatalf("line %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// Expect reads a line and wants it to start with prefix; it returns it.
func (c *Conn) Expect(prefix string) string {
	c.T.Helper()
	l := c.Line()
	if !strings.HasPrefix(l, prefix) {
		c.T.Fatalf("got %q, want a line starting with %q", l, prefix)
	}
	return l
}

// Reply reads one whole SMTP reply, whose lines "250-..." continue it and
// whose line "250 ..." ends it (RFC 5321 §4.2.1), and returns its lines
// without their line endings.
func (c *Conn) Reply() []string {
	c.T.Helper()
	var lines []string
	for {
		l, err := c.R.ReadString('\n')
		if err != nil {
			c.T.Fatalf("read reply after %q: %q, %v", lines, l, err)
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}

// ExpectClosed wants the connection to end with no further byte.
func (c *Conn) ExpectClosed() {
	c.T.Helper()
	b, err := c.R.ReadByte()
	if err == nil {
		rest, _ := c.R.ReadString('\n')
		c.T.Fatalf("got %q, want the connection closed", string(b)+rest)
	}
	if !errors.Is(err, io.EOF) && !isReset(err) {
		c.T.Fatalf("read: %v, want EOF", err)
	}
}

// ExpectSilence wants nothing to arrive for d.
func (c *Conn) ExpectSilence(d time.Duration) {
	c.T.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Now().Add(Wait))
	if l, err := c.R.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		c.T.Fatalf("got %q, %v; want silence", l, err)
	}
}

// StartTLS runs the client side of the handshake after the server's
// go-ahead to STARTTLS or STLS, and continues the conversation inside TLS.
// No byte may have arrived behind the go-ahead.
func (c *Conn) StartTLS(cfg *stdtls.Config) {
	c.T.Helper()
	if n := c.R.Buffered(); n != 0 {
		c.T.Fatalf("%d bytes arrived behind the go-ahead to TLS", n)
	}
	tc := stdtls.Client(c.Conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.T.Fatalf("TLS handshake: %v", err)
	}
	c.Conn, c.R = tc, bufio.NewReader(tc)
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
}
