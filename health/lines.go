package health

import (
	"bufio"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// maxLine bounds one reply line; a longer line is a protocol error.
const maxLine = 4096

// maxLines bounds the lines read while waiting for the end of one reply
// (a CAPA list, untagged IMAP data before the tagged status).
const maxLines = 100

// dialogue is a line-by-line conversation with a POP3 or IMAP server, which
// needs no library: a handful of commands, each answered by a status line.
type dialogue struct {
	*attempt
	conn net.Conn // raw, or TLS over it
	r    *bufio.Reader
}

// newDialogue starts a conversation on conn.
func newDialogue(a *attempt, conn net.Conn) *dialogue {
	return &dialogue{attempt: a, conn: conn, r: bufio.NewReaderSize(conn, maxLine)}
}

// send writes one command line.
func (d *dialogue) send(line string) error {
	_, err := io.WriteString(d.conn, line+"\r\n")
	return err
}

// line reads one reply line without its line ending.
func (d *dialogue) line() (string, error) {
	b, err := d.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", fmt.Errorf("reply line longer than %d bytes", maxLine)
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// ask sends cmd and reads the first line of its reply; failures are
// reported as protocol errors of step cmd.
func (d *dialogue) ask(cmd string) (string, error) {
	if err := d.send(cmd); err != nil {
		return "", d.broke(cmd, err)
	}
	reply, err := d.line()
	if err != nil {
		return "", d.broke(cmd, err)
	}
	return reply, nil
}

// broke reports a failed write or read during step.
func (d *dialogue) broke(step string, err error) error {
	return d.fail(StageProtocol, step, fmt.Errorf("%s: %w", step, err))
}

// unwanted reports a reply that means the server is unwell.
func (d *dialogue) unwanted(step, what, reply string) error {
	return d.fail(StageProtocol, step, &replyError{what: what, reply: reply})
}

// upgrade starts TLS on the raw connection once the server agreed to
// STARTTLS or STLS. Bytes that arrived after the agreement are refused:
// they would otherwise be taken as if they came over TLS (the STARTTLS
// injection of RFC 2595 section 3.1 and RFC 3207 section 6, here in reverse).
func (d *dialogue) upgrade(step string, cfg *stdtls.Config) error {
	if n := d.r.Buffered(); n > 0 {
		return d.fail(StageProtocol, step, fmt.Errorf("%s: %d bytes arrived after the go-ahead for TLS", step, n))
	}
	tc, err := d.handshake(cfg, "")
	if err != nil {
		return err
	}
	d.conn = tc
	d.r.Reset(tc)
	return nil
}

// farewell sends cmd after a failed protocol step if the server still
// listens, and waits briefly for lines until done says the reply is complete.
func (d *dialogue) farewell(cause error, cmd string, done func(line string) bool) {
	var pe *Error
	if !errors.As(cause, &pe) || pe.Stage != StageProtocol || !d.alive(cause) {
		return
	}
	if d.conn.SetDeadline(time.Now().Add(farewellWait)) != nil || d.send(cmd) != nil {
		return
	}
	for range maxLines {
		line, err := d.line()
		if err != nil || done(line) {
			return
		}
	}
}

// hasPrefixFold reports whether s begins with prefix, ignoring ASCII case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
