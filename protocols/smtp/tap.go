package smtp

import (
	"bytes"
	"io"
	"net"
	"sync"
	"time"
)

// clientTap is the client's plaintext stream as go-smtp's server reads and
// writes it in relay mode. go-smtp keeps the command grammar; the tap
// adds what go-smtp cannot be asked to do:
//
//   - it logs a client's XCLIENT and XFORWARD, which go-smtp's parser (it
//     knows four-letter verbs only) answers "501 5.5.2 Bad command"
//     without handing them to gatehouse, so they never reach a back-end;
//   - it notes a line that begins with a dot followed by a bare LF or a
//     bare CR, whose dot (and CR) go-smtp's data reader drops, so that
//     session.Data refuses the message rather than alter it silently;
//   - it replaces go-smtp's own "250 2.0.0 Roger, accepting mail from"
//     and "I'll make sure … gets this" with the back-end's reply, queue
//     ids and all;
//   - it sends go-smtp's replies to a pipelined group in one write
//     (RFC 2920): they are held until go-smtp reads again, which it does
//     only once it has answered every command it had read;
//   - it takes STARTTLS away from go-smtp: the command ends go-smtp's
//     Serve (the tap reports EOF) and session.relay upgrades the
//     connection and serves the rest with a new go-smtp server over a
//     new tap, so that the tap always sees plaintext.
//
// The tap is used from go-smtp's goroutine for the connection (Data,
// which pumps messages, runs there too); okReply is set by Mail and Rcpt,
// also there, under its own lock for clarity.
type clientTap struct {
	net.Conn
	s *session

	held     []byte // read from the client, from a STARTTLS line on
	pending  []byte // given to go-smtp before anything read (see resume)
	dataNext bool   // the last read ended with DATA: go-smtp has nothing buffered
	startTLS bool   // the client asked for STARTTLS; go-smtp was told EOF
	greeted  bool   // go-smtp's greeting is to be swallowed (after STARTTLS)
	tail     [4]byte
	tailN    int

	out []byte // replies written by go-smtp, not yet sent (see flush)

	mu sync.Mutex
	ok []byte // the back-end's 2xx to MAIL or RCPT, to replace go-smtp's

	closeOnce sync.Once
	closed    chan struct{} // closed by Close: go-smtp is done with the tap
}

// newClientTap returns a tap over conn; silentGreeting swallows go-smtp's
// greeting, which the client must not see twice.
func newClientTap(s *session, conn net.Conn, silentGreeting bool) *clientTap {
	return &clientTap{Conn: conn, s: s, greeted: silentGreeting, closed: make(chan struct{})}
}

// Read implements net.Conn.
func (t *clientTap) Read(p []byte) (int, error) {
	if err := t.flush(); err != nil {
		return 0, err
	}
	if t.startTLS {
		return 0, io.EOF // go-smtp's Serve ends quietly
	}
	if len(t.pending) > 0 {
		// What followed a pumped message never came through Read:
		// its dots are looked at here. go-smtp takes it in reads of
		// its buffer's size, and while some is still held a DATA at
		// the end of one read does not leave go-smtp empty-handed.
		n := copy(p, t.pending)
		t.pending = t.pending[n:]
		t.scanDots(p[:n])
		n = t.scanCommands(p, n)
		if len(t.pending) > 0 {
			t.dataNext = false
		}
		return n, nil
	}
	n, err := t.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	t.scanDots(p[:n])
	t.dataNext = false
	if t.s.inData.Load() {
		return n, err
	}
	return t.scanCommands(p, n), err
}

// scanCommands looks at the command lines in p[:n]: identity commands
// are logged, and a STARTTLS (when go-smtp would offer it) cuts the read
// short. It returns how many bytes go-smtp gets.
func (t *clientTap) scanCommands(p []byte, n int) int {
	offerTLS := t.s.srv != nil && t.s.srv.TLSConfig != nil
	for off := 0; off < n; {
		line := p[off:n]
		next := n
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line, next = line[:i], off+i+1
		}
		t.dataNext = next == n && isDATA(line)
		if verb := identityVerb(line); verb != "" {
			identityRefused.WithLabelValues(t.s.f.Pool.Name, verb).Inc()
			t.s.log.Warn("smtp client command refused: it would change the back-end's view of the client", "command", verb)
		}
		if offerTLS && len(line) >= 8 && bytes.EqualFold(line[:8], []byte("STARTTLS")) {
			t.held = append(t.held[:0], p[off:n]...)
			t.startTLS = true
			if off == 0 {
				return 0 // a zero read: go-smtp reads again and sees EOF
			}
			return off
		}
		off = next
	}
	return n
}

// scanDots notes "CRLF . LF" and "CRLF . CR x" (x not LF) in the stream,
// across reads: the last four bytes of one read are looked at again with
// the first four of the next.
func (t *clientTap) scanDots(b []byte) {
	var joint [8]byte
	j := append(append(joint[:0], t.tail[:t.tailN]...), b[:min(len(b), 4)]...)
	if dotAnomaly(j) || dotAnomaly(b) {
		t.s.dotAnomaly.Store(true)
	}
	if len(b) < 4 {
		j = append(append(joint[:0], t.tail[:t.tailN]...), b...)
		b = j
	}
	t.tailN = copy(t.tail[:], b[max(0, len(b)-4):])
}

// dotAnomaly reports whether b holds CRLF "." followed by LF, or by a CR
// that is not followed by LF.
func dotAnomaly(b []byte) bool {
	for {
		i := bytes.Index(b, []byte("\r\n."))
		if i < 0 || i+3 >= len(b) {
			return false
		}
		b = b[i+3:]
		switch {
		case b[0] == '\n':
			return true
		case b[0] == '\r' && len(b) > 1 && b[1] != '\n':
			return true
		}
	}
}

// Write implements net.Conn: the reply waits in the tap until flush.
func (t *clientTap) Write(p []byte) (int, error) {
	if t.greeted && bytes.HasPrefix(p, []byte("220 ")) {
		t.greeted = false
		return len(p), nil
	}
	if bytes.HasPrefix(p, []byte("250 2.0.0 Roger, accepting mail from ")) ||
		bytes.HasPrefix(p, []byte("250 2.0.0 I'll make sure ")) {
		t.mu.Lock()
		ok := t.ok
		t.ok = nil
		t.mu.Unlock()
		if ok != nil {
			t.out = append(t.out, ok...)
			return len(p), nil
		}
	}
	t.out = append(t.out, p...)
	return len(p), nil
}

// flush sends the replies held back, in one write.
func (t *clientTap) flush() error {
	if len(t.out) == 0 {
		return nil
	}
	t.Conn.SetWriteDeadline(time.Now().Add(t.s.f.cfg.CommandTimeout))
	_, err := t.Conn.Write(t.out)
	if cap(t.out) > 16<<10 {
		t.out = nil
	}
	t.out = t.out[:0]
	return err
}

// okReply sets the back-end's reply that replaces go-smtp's next 250 to
// MAIL or RCPT.
func (t *clientTap) okReply(r reply) {
	t.mu.Lock()
	t.ok = r.wire()
	t.mu.Unlock()
}

// Close implements net.Conn: go-smtp closes its connection when Serve
// ends, which after STARTTLS must leave the client's connection open.
func (t *clientTap) Close() error {
	t.flush()
	t.closeOnce.Do(func() { close(t.closed) })
	if t.startTLS {
		return nil
	}
	return t.Conn.Close()
}

// resume gives go-smtp, after a message the pump relayed, the end of
// data its reader waits for and then what the client sent after the
// message.
func (t *clientTap) resume(leftover []byte) {
	t.pending = append(append(t.pending[:0], ".\r\n"...), leftover...)
	t.dataNext = false
}

// isDATA reports whether line (LF removed) is the DATA command.
func isDATA(line []byte) bool {
	line = bytes.TrimSuffix(line, []byte("\r"))
	return len(line) == 4 && bytes.EqualFold(line, []byte("DATA"))
}

// identityVerb returns XCLIENT or XFORWARD if line is that command.
// Postfix skips white space before a verb, so it is skipped here too.
func identityVerb(line []byte) string {
	line = bytes.TrimLeft(line, " \t\r\v\f")
	for _, verb := range []string{"XCLIENT", "XFORWARD"} {
		if len(line) >= len(verb) && bytes.EqualFold(line[:len(verb)], []byte(verb)) &&
			(len(line) == len(verb) || line[len(verb)] == ' ' || line[len(verb)] == '\r') {
			return verb
		}
	}
	return ""
}
