package https

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
)

// How a message body is delimited (RFC 9112 section 6.3).
type bodyKind uint8

const (
	bodyNone    bodyKind = iota // no body
	bodyFixed                   // Content-Length bytes
	bodyChunked                 // chunked transfer coding
	bodyToEOF                   // until the sender closes (responses only)
)

// bigCopy is the size above which a body bypasses the bufio buffers and
// moves through a pooled buffer of this size, read and written directly.
const bigCopy = 64 << 10

var bigBufs = sync.Pool{New: func() any { b := make([]byte, bigCopy); return &b }}

// maxChunkLine bounds a chunk-size line with its extensions, and
// maxTrailer the trailer section of a chunked body.
const (
	maxChunkLine = 4096
	maxTrailer   = 64 << 10
)

var errChunk = errors.New("malformed chunked body")

// fill flushes dst when src has nothing buffered, so that a read about to
// block never holds back bytes already received: every byte is passed on
// as soon as it arrives (MAPI's PENDING chunks, RPC channel PDUs).
func fill(dst *bufio.Writer, src *bufio.Reader) error {
	if src.Buffered() == 0 {
		return dst.Flush()
	}
	return nil
}

// copyFixed moves exactly n bytes from src to dst, flushing whenever src
// runs dry. It returns the bytes moved; fewer than n always comes with an
// error (io.ErrUnexpectedEOF for a peer that closed early).
func copyFixed(dst *bufio.Writer, src *bufio.Reader, n int64) (int64, error) {
	var done int64
	for done < n {
		if err := fill(dst, src); err != nil {
			return done, err
		}
		if src.Buffered() == 0 {
			if n-done >= bigCopy {
				m, err := copyBig(dst, src, n-done)
				if done += m; err != nil {
					return done, err
				}
				continue
			}
			if _, err := src.Peek(1); err != nil {
				return done, unexpected(err)
			}
		}
		b, _ := src.Peek(int(min(int64(src.Buffered()), n-done)))
		w, err := dst.Write(b)
		src.Discard(w)
		done += int64(w)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// copyBig reads once, up to bigCopy bytes, straight from src's connection
// (bufio.Reader skips its buffer for large reads when empty) and writes
// them straight to dst's (dst was just flushed, so it skips its own).
func copyBig(dst *bufio.Writer, src *bufio.Reader, limit int64) (int64, error) {
	bp := bigBufs.Get().(*[]byte)
	defer bigBufs.Put(bp)
	nr, rerr := src.Read((*bp)[:min(limit, bigCopy)])
	if nr > 0 {
		if _, err := dst.Write((*bp)[:nr]); err != nil {
			return int64(nr), err
		}
	}
	if rerr != nil {
		return int64(nr), unexpected(rerr)
	}
	return int64(nr), nil
}

// copyToEOF moves bytes until src ends (a response delimited by close).
func copyToEOF(dst *bufio.Writer, src *bufio.Reader) (int64, error) {
	var done int64
	for {
		n, err := copyFixed(dst, src, 1<<62)
		done += n
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return done, nil
		}
		if err != nil {
			return done, err
		}
	}
}

// copyChunked moves a chunked body verbatim, framing, extensions and
// trailers included, checking every chunk-size line on the way: a body
// this proxy cannot delimit exactly is refused rather than guessed
// (request smuggling).
func copyChunked(dst *bufio.Writer, src *bufio.Reader) (int64, error) {
	return chunks(dst, src, true)
}

// dechunk moves a chunked body's data only, for an HTTP/1.0 client; the
// response is then delimited by closing the connection.
func dechunk(dst *bufio.Writer, src *bufio.Reader) (int64, error) {
	return chunks(dst, src, false)
}

func chunks(dst *bufio.Writer, src *bufio.Reader, verbatim bool) (int64, error) {
	var done int64
	for {
		if err := fill(dst, src); err != nil {
			return done, err
		}
		line, err := readLine(src, maxChunkLine)
		if err != nil {
			return done, chunkErr(err)
		}
		size, err := chunkSize(line)
		if err != nil {
			return done, err
		}
		if verbatim {
			n, err := writeLine(dst, line)
			if done += n; err != nil {
				return done, err
			}
		}
		if size == 0 {
			n, err := trailer(dst, src, verbatim)
			return done + n, err
		}
		n, err := chunkData(dst, src, size, verbatim)
		if done += n; err != nil {
			return done, err
		}
	}
}

// chunkData moves one chunk's data and the CRLF after it.
func chunkData(dst *bufio.Writer, src *bufio.Reader, size int64, verbatim bool) (int64, error) {
	n, err := copyFixed(dst, src, size)
	if err != nil {
		return n, err
	}
	if err := fill(dst, src); err != nil {
		return n, err
	}
	line, err := readLine(src, maxChunkLine)
	if err != nil {
		return n, chunkErr(err)
	}
	if len(line) != 0 {
		return n, fmt.Errorf("%w: no CRLF after chunk data", errChunk)
	}
	if verbatim {
		m, err := dst.WriteString("\r\n")
		return n + int64(m), err
	}
	return n, nil
}

// trailer moves the trailer section and the final empty line (only
// skipped when not verbatim).
func trailer(dst *bufio.Writer, src *bufio.Reader, verbatim bool) (int64, error) {
	var done, seen int64
	for {
		if err := fill(dst, src); err != nil {
			return done, err
		}
		line, err := readLine(src, maxChunkLine)
		if err != nil {
			return done, chunkErr(err)
		}
		if seen += int64(len(line)); seen > maxTrailer {
			return done, fmt.Errorf("%w: trailer section too large", errChunk)
		}
		if err := checkTrailer(line); err != nil {
			return done, err
		}
		if verbatim {
			n, err := writeLine(dst, line)
			if done += n; err != nil {
				return done, err
			}
		}
		if len(line) == 0 {
			return done, nil
		}
	}
}

// chunkSize parses "hex-size [BWS ; extensions]" (RFC 9112 section 7.1);
// extensions are passed on only when they hold no control character but
// tab (no bare CR, LF or NUL).
func chunkSize(line []byte) (int64, error) {
	var size int64
	i := 0
	for ; i < len(line); i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		if i >= 15 {
			return 0, fmt.Errorf("%w: chunk size too large", errChunk)
		}
		size = size<<4 | int64(d)
	}
	if i == 0 {
		return 0, fmt.Errorf("%w: chunk size %q", errChunk, clip(line))
	}
	rest := line[i:]
	if len(rest) == 0 {
		return size, nil
	}
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	if len(rest) == 0 || rest[0] != ';' || !fieldText(rest) {
		return 0, fmt.Errorf("%w: chunk size or extension %q", errChunk, clip(line))
	}
	return size, nil
}

// checkTrailer refuses a trailer line that is not a well-formed field
// (a bare CR, a NUL or another control character, obsolete folding) or
// that names a header which frames or routes a message: those may not
// be sent as trailers (RFC 9110 section 6.5.1), and a back-end that
// merges trailers into the head would read them.
func checkTrailer(line []byte) error {
	if len(line) == 0 {
		return nil
	}
	f, err := parseField(line)
	if err != nil {
		return fmt.Errorf("%w: trailer: %w", errChunk, err)
	}
	if framing(f.name) || equalFold(f.name, "Host") {
		return fmt.Errorf("%w: %s in a trailer", errChunk, f.name)
	}
	return nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func writeLine(dst *bufio.Writer, line []byte) (int64, error) {
	n, err := dst.Write(line)
	if err == nil {
		var m int
		m, err = dst.WriteString("\r\n")
		n += m
	}
	return int64(n), err
}

func chunkErr(err error) error {
	if errors.Is(err, errMalformed) || errors.Is(err, errHeadTooLarge) {
		return fmt.Errorf("%w: %w", errChunk, err)
	}
	return unexpected(err)
}

// unexpected turns a clean EOF in the middle of a body into
// io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
