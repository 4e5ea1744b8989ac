package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"
)

// The relay's data path. go-smtp's data reader pulls a message through
// bufio.Reader.ReadByte one byte at a time and un-stuffs it, and its
// writer re-stuffs it toward the back-end: with 10 MiB messages that was
// nine tenths of the relay's CPU. The pump instead forwards the
// dot-stuffed stream as it comes, in large reads and one write per read,
// looking only at line ends: it finds CRLF "." CRLF, turns a bare LF into
// CRLF (stuffing a dot that then begins a line, as go-smtp's writer did,
// so a back-end that takes LF for a line end cannot be shown an end of
// data gatehouse did not see), and stops at a dot followed by a bare LF or
// CR after a CRLF, which go-smtp's reader would have altered and back-ends
// read differently.

// errTooLarge is go-smtp's 552 5.3.4 for a message over the size limit.
var errTooLarge = gosmtp.ErrDataTooLarge

// errDotAnomaly reports a line of a dot and a bare CR or LF.
var errDotAnomaly = errors.New("a line begins with a dot and a bare CR or LF")

// pumpBuffers hold message data on its way through the pump.
var pumpBuffers = sync.Pool{New: func() any {
	return &pumpBuf{in: make([]byte, 64<<10), out: bufio.NewWriterSize(nil, 64<<10)}
}}

type pumpBuf struct {
	in  []byte
	out *bufio.Writer
}

// dataPump forwards one message from the client to the back-end.
type dataPump struct {
	in       io.Reader     // the client, after the 354
	out      *bufio.Writer // the back-end; nil discards
	max      int64         // bytes the client may send; 0: no limit
	n        int64         // bytes read from the client
	atLine   bool          // the next byte begins a line, after a CRLF
	afterLF  bool          // the next byte begins a line after a bare LF
	prevCR   bool          // the last byte looked at was a CR
	tooLarge bool
	anomaly  bool
}

// run forwards the message up to and including its end, CRLF "." CRLF,
// and returns what the client sent after it (pipelined commands). A
// read error is returned as it is; a message over max or with a dot
// anomaly is read to its end but not forwarded past that point, and
// reported as gosmtp.ErrDataTooLarge or errDotAnomaly after the end.
func (p *dataPump) run(buf []byte) (leftover []byte, readErr, err error) {
	p.atLine = true // the message begins at a line
	have := 0
	for {
		n, rerr := p.in.Read(buf[have:])
		p.n += int64(n)
		if p.max > 0 && p.n > p.max {
			p.tooLarge = true
		}
		data := buf[:have+n]
		used, done, werr := p.scan(data)
		if werr != nil {
			return nil, nil, werr
		}
		if done {
			return data[used:], nil, p.verdict()
		}
		if n == 0 && rerr != nil {
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			return nil, rerr, rerr
		}
		have = copy(buf, data[used:])
	}
}

func (p *dataPump) verdict() error {
	switch {
	case p.anomaly:
		return errDotAnomaly
	case p.tooLarge:
		return errTooLarge
	}
	return nil
}

// forwarding reports whether bytes still go to the back-end.
func (p *dataPump) forwarding() bool { return p.out != nil && !p.tooLarge && !p.anomaly }

// emit forwards b.
func (p *dataPump) emit(b []byte) {
	if p.forwarding() && len(b) > 0 {
		p.out.Write(b)
	}
}

// scan forwards what it can decide of data and reports how much it used
// (the rest, at most the start of a line, waits for the next read),
// whether the end of data was reached, and a write error.
func (p *dataPump) scan(data []byte) (used int, done bool, err error) {
	start, i := 0, 0
	for {
		if p.atLine || p.afterLF {
			if i >= len(data) {
				break
			}
			if data[i] == '.' && p.afterLF {
				p.emit(data[start:i])
				p.emit([]byte{'.'}) // a new line for the back-end: stuff it
				start = i
			} else if data[i] == '.' {
				end, need := p.dotLine(data[i:])
				if need {
					break
				}
				if end {
					p.emit(data[start : i+3])
					return i + 3, true, p.flush()
				}
			}
			p.atLine, p.afterLF = false, false
		}
		j := indexLF(data[i:])
		if j < 0 {
			i = len(data)
			p.prevCR = i > 0 && data[i-1] == '\r'
			break
		}
		pos := i + j
		cr := p.prevCR
		if pos > 0 {
			cr = data[pos-1] == '\r'
		}
		p.prevCR = false
		i = pos + 1
		if cr {
			p.atLine = true
			continue
		}
		p.emit(data[start:pos]) // a bare LF goes out as CRLF
		p.emit([]byte("\r\n"))
		start, p.afterLF = pos+1, true
	}
	p.emit(data[start:i])
	return i, false, p.flush()
}

// dotLine looks at a line that begins with a dot after a CRLF: the end
// of data, a dot and a bare CR or LF (noted), or a stuffed line. need
// means more bytes must come first.
func (p *dataPump) dotLine(b []byte) (end, need bool) {
	switch {
	case len(b) < 2:
		return false, true
	case b[1] == '\n':
		p.anomaly = true
	case b[1] != '\r':
	case len(b) < 3:
		return false, true
	case b[2] == '\n':
		return true, false
	default:
		p.anomaly = true
	}
	return false, false
}

func (p *dataPump) flush() error {
	if p.out == nil {
		return nil
	}
	return p.out.Flush()
}

// indexLF finds the next LF.
func indexLF(b []byte) int { return bytes.IndexByte(b, '\n') }

// pumpMessage relays a DATA message through the pump, when go-smtp has
// nothing of it buffered (the client waited for the 354, as RFC 2920
// section 3.1 says it must). Called with mu held.
func (s *session) pumpMessage() *gosmtp.SMTPError {
	l, cfg := s.leg, &s.f.cfg
	if err := s.tap.flush(); err != nil { // the 354
		return s.dataFailed(err, err)
	}
	pb := pumpBuffers.Get().(*pumpBuf)
	defer func() { pb.out.Reset(nil); pumpBuffers.Put(pb) }()
	pb.out.Reset(&deadlineWriter{conn: l.conn, timeout: cfg.BackendCommandTimeout})
	p := &dataPump{in: s.tap.Conn, out: pb.out}
	if s.srv != nil && s.srv.MaxMessageBytes > 0 {
		p.max = s.srv.MaxMessageBytes + int64(len(".\r\n"))
	}
	l.conn.SetDeadline(time.Now().Add(cfg.BackendCommandTimeout))
	defer l.conn.SetDeadline(time.Time{})
	r, err := l.command("DATA")
	switch {
	case err != nil:
		p.out = nil
		s.drain(p, pb.in)
		return s.lost(err)
	case r.Code != 354:
		p.out = nil
		s.drain(p, pb.in)
		return s.backendError(r.smtpError())
	}
	if cfg.ReceivedHeader {
		p.out.WriteString(s.receivedHeader(time.Now()))
	}
	leftover, readErr, err := p.run(pb.in)
	s.tx.size = p.n
	if readErr == nil { // the message, as sent (dot-stuffed), without its end
		s.tx.size = max(0, p.n-int64(len(leftover))-int64(len(".\r\n")))
	}
	if readErr != nil {
		return s.dataFailed(readErr, readErr)
	}
	s.tap.resume(leftover)
	switch {
	case errors.Is(err, errDotAnomaly):
		return s.refuseDotAnomaly()
	case errors.Is(err, errTooLarge):
		return s.dataFailed(errTooLarge, err)
	case err != nil:
		return s.lost(err)
	}
	return s.finalReply()
}

// drain reads the client's message to its end without forwarding it.
func (s *session) drain(p *dataPump, buf []byte) {
	if leftover, readErr, _ := p.run(buf); readErr == nil {
		s.tap.resume(leftover)
	}
}

// finalReply reads the back-end's reply to the end of data.
func (s *session) finalReply() *gosmtp.SMTPError {
	l := s.leg
	l.conn.SetReadDeadline(time.Now().Add(s.f.cfg.BackendDataTimeout))
	r, err := readReply(l.br)
	if err != nil {
		return s.lost(err)
	}
	if r.Code/100 == 2 {
		return r.smtpError()
	}
	return s.backendError(r.smtpError())
}
