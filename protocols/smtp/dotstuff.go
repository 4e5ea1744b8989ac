package smtp

import (
	"bufio"
	"bytes"
	"io"
	"sync"
)

// stuffers are reused from message to message; each holds a 32 KiB
// output buffer.
var stuffers = sync.Pool{New: func() any { return &stuffer{out: bufio.NewWriterSize(nil, 32<<10)} }}

// newStuffer returns a stuffer writing to conn, with dot as the DotWriter
// of the message; release it after the message.
func newStuffer(conn, dot io.Writer) *stuffer {
	s := stuffers.Get().(*stuffer)
	s.out.Reset(conn)
	s.dot, s.slow, s.pending, s.nl = dot, false, s.pending[:0], -1
	return s
}

// release returns the stuffer for reuse.
func (s *stuffer) release() {
	s.out.Reset(nil)
	s.dot = nil
	if cap(s.pending) > maxPendingLine {
		s.pending = nil
	}
	stuffers.Put(s)
}

// maxPendingLine bounds the bytes a stuffer holds back while it waits
// for the end of a line. A message with longer lines (BDAT has no line
// limit) goes the slow way: byte by byte through go-smtp's own writer.
const maxPendingLine = 64 << 10

// stuffer writes message data toward the back-end as go-smtp's DotWriter
// (net/textproto's) would, byte for byte the same, but a line at a time
// instead of a byte at a time: a leading "." is doubled and every line
// ends in CRLF (RFC 5321 section 4.5.2). It writes complete lines straight
// to the connection and keeps the last line back; finish hands that line
// to the DotWriter, which then ends the data with its ".\r\n" exactly as if
// it had seen everything. Until finish, the DotWriter has written nothing,
// so its buffer is empty and the bytes on the wire stay in order.
type stuffer struct {
	out     *bufio.Writer // the back-end connection
	dot     io.Writer     // go-smtp's DotWriter for this message
	pending []byte        // the last line seen, and what came after it
	nl      int           // where pending's line ends (its LF), or -1
	slow    bool          // a line was too long: everything goes to dot
}

// Write implements io.Writer. Each byte is looked at a bounded number of
// times, however the data is cut into writes.
func (s *stuffer) Write(p []byte) (int, error) {
	if s.slow {
		return s.dot.Write(p)
	}
	last := bytes.LastIndexByte(p, '\n')
	if last < 0 { // no line ends: hold p back
		s.pending = append(s.pending, p...)
		return len(p), s.spill()
	}
	prev := bytes.LastIndexByte(p[:last], '\n')
	var err error
	if prev >= 0 { // p holds two line ends: all up to the first of them goes
		s.pending = append(s.pending, p[:prev+1]...)
		err = s.lines(s.pending)
		s.pending, s.nl = append(s.pending[:0], p[prev+1:]...), last-prev-1
	} else { // one line end: the line held back so far, if complete, goes
		if s.nl >= 0 {
			err = s.lines(s.pending[:s.nl+1])
			s.pending = append(s.pending[:0], s.pending[s.nl+1:]...)
		}
		s.nl = len(s.pending) + last
		s.pending = append(s.pending, p...)
	}
	if err != nil {
		return 0, err
	}
	return len(p), s.spill()
}

// spill turns to the slow way once too much waits for a line end.
func (s *stuffer) spill() error {
	if len(s.pending) <= maxPendingLine {
		return nil
	}
	return s.finish()
}

// finish writes what is held back through the DotWriter; the caller then
// closes the DotWriter, which writes the end of data.
func (s *stuffer) finish() error {
	if err := s.out.Flush(); err != nil {
		return err
	}
	s.slow = true
	_, err := s.dot.Write(s.pending)
	s.pending = s.pending[:0]
	return err
}

// lines writes complete lines, each ending in LF. textproto doubles a
// leading dot and, at the LF, adds a CR unless the line's state machine
// stands on a CR: that is, unless an odd number of CRs precede the LF (it
// takes "\r\r" as a CR and a data byte).
func (s *stuffer) lines(b []byte) error {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		line := b[:i]
		if len(line) > 0 && line[0] == '.' {
			s.out.WriteByte('.')
		}
		s.out.Write(line)
		crs := len(line) - len(bytes.TrimRight(line, "\r"))
		if crs%2 == 0 {
			s.out.WriteByte('\r')
		}
		if err := s.out.WriteByte('\n'); err != nil {
			return err
		}
		b = b[i+1:]
	}
	return nil
}
