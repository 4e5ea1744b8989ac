package https

import (
	"bufio"
	"io"
	"sync"
)

// Buffers are taken only while bytes move and given back as soon as the
// connection waits: a held long poll or an idle keep-alive connection then
// costs no buffer at all on a plain socket, since readiness is awaited on
// the socket itself (timedConn.waitReadable).

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufSize) }}
)

func getReader(r io.Reader) *bufio.Reader {
	b := readers.Get().(*bufio.Reader)
	b.Reset(r)
	return b
}

func getWriter(w io.Writer) *bufio.Writer {
	b := writers.Get().(*bufio.Writer)
	b.Reset(w)
	return b
}

// putReader gives a reader back unless it holds unread bytes, and
// reports whether it did.
func putReader(b *bufio.Reader) bool {
	if b.Buffered() > 0 {
		return false
	}
	b.Reset(nil)
	readers.Put(b)
	return true
}

// putWriter gives a writer back unless it holds unwritten bytes.
func putWriter(b *bufio.Writer) bool {
	if b.Buffered() > 0 {
		return false
	}
	b.Reset(nil)
	writers.Put(b)
	return true
}

// rd returns the client reader, taking a buffer when it has none.
func (s *session) rd() *bufio.Reader {
	if s.br == nil {
		s.br = getReader(s.conn)
	}
	return s.br
}

// wr returns the client writer, taking a buffer when it has none.
func (s *session) wr() *bufio.Writer {
	if s.bw == nil {
		s.bw = getWriter(s.conn)
	}
	return s.bw
}

func (s *session) releaseReader() {
	if s.br != nil && putReader(s.br) {
		s.br = nil
	}
}

func (s *session) releaseWriter() {
	if s.bw != nil && putWriter(s.bw) {
		s.bw = nil
	}
}

// awaitRequest waits for the first byte of the next request: on a plain
// socket without holding a buffer, over TLS through the reader (decrypted
// bytes may already wait inside the TLS connection).
func (s *session) awaitRequest() error {
	if s.br == nil && !s.tls {
		if err := s.timed.waitReadable(); err != nil {
			return err
		}
	}
	_, err := s.rd().Peek(1)
	return err
}

func (u *upstream) rd() *bufio.Reader {
	if u.br == nil {
		u.br = getReader(u.conn)
	}
	return u.br
}

func (u *upstream) wr() *bufio.Writer {
	if u.bw == nil {
		u.bw = getWriter(u.conn)
	}
	return u.bw
}

func (u *upstream) releaseReader() {
	if u.br != nil && putReader(u.br) {
		u.br = nil
	}
}

func (u *upstream) releaseWriter() {
	if u.bw != nil && putWriter(u.bw) {
		u.bw = nil
	}
}

// awaitResponse waits for the first byte of a long poll's response
// without a buffer when the back-end connection is a plain socket. Other
// responses come soon: they are read at once, which saves a system call.
func (u *upstream) awaitResponse(longPoll bool) error {
	if longPoll && u.br == nil && u.plain {
		return u.timed.waitReadable()
	}
	return nil
}
