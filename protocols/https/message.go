package https

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// A head is the start line and header block of one HTTP/1.x message, parsed
// in place: every slice points into raw, the bytes as they arrived, so that
// header names keep the case the peer wrote (Outlook fails on
// "Www-Authenticate", which net/http would make of "WWW-Authenticate").
type head struct {
	raw  []byte
	line [3][]byte // method, target, version — or version, status, reason
	hdrs []field
}

// field is one header line.
type field struct {
	name, value []byte
}

// Errors of parsing; each becomes a 4xx answer to the client.
var (
	errHeadTooLarge = errors.New("message head too large")
	errMalformed    = errors.New("malformed message")
)

// maxHeaders caps the header lines of one message, as HAProxy's
// tune.http.maxhdr does by default: a head of thousands of tiny headers
// costs a parser behind gatehouse far more than its bytes suggest.
const maxHeaders = 101

// readHead reads one message head into buf (reused between messages) and
// parses it. Empty lines before the start line are skipped (RFC 9112
// section 2.2). Lines may end in CRLF or a bare LF; a bare CR, a NUL or
// another control character in a field, an obsolete folded line, white
// space before a colon or more than maxHeaders fields is refused (RFC
// 9112 section 5.1, 5.2; RFC 9110 section 5.5).
func readHead(r *bufio.Reader, buf []byte, limit int, h *head) error {
	buf = buf[:0]
	lines := 0
	for {
		line, err := readLine(r, limit-len(buf))
		if err != nil {
			return err
		}
		if len(line) == 0 {
			if lines == 0 {
				continue
			}
			break
		}
		if lines > maxHeaders {
			return fmt.Errorf("%w: more than %d header fields", errHeadTooLarge, maxHeaders)
		}
		buf = append(buf, line...)
		buf = append(buf, '\n')
		lines++
	}
	h.raw = buf
	return h.parse()
}

// readLine returns one line without its line ending; the slice is valid
// until the next read. It refuses lines longer than limit.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return longLine(r, line, limit)
	}
	if err != nil {
		if len(line) > 0 && errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: truncated head", errMalformed)
		}
		return nil, err
	}
	if len(line) > limit {
		return nil, errHeadTooLarge
	}
	return trimEOL(line), nil
}

// longLine continues a line longer than the reader's buffer.
func longLine(r *bufio.Reader, first []byte, limit int) ([]byte, error) {
	acc := append([]byte(nil), first...)
	for {
		if len(acc) > limit {
			return nil, errHeadTooLarge
		}
		more, err := r.ReadSlice('\n')
		acc = append(acc, more...)
		if err == nil {
			if len(acc) > limit {
				return nil, errHeadTooLarge
			}
			return trimEOL(acc), nil
		}
		if err != bufio.ErrBufferFull {
			return nil, err
		}
	}
}

func trimEOL(line []byte) []byte {
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line
}

// parse splits raw into the start line and fields.
func (h *head) parse() error {
	h.hdrs = h.hdrs[:0]
	rest := h.raw
	first := true
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i]
		rest = rest[i+1:]
		if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, 0) >= 0 {
			return fmt.Errorf("%w: CR or NUL inside a line", errMalformed)
		}
		if first {
			if err := h.parseStart(line); err != nil {
				return err
			}
			first = false
			continue
		}
		if err := h.parseField(line); err != nil {
			return err
		}
	}
	return nil
}

// parseStart splits the start line in three at the first two spaces; the
// third part (reason phrase) may hold spaces.
func (h *head) parseStart(line []byte) error {
	a, rest, ok1 := bytes.Cut(line, []byte(" "))
	b, c, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || len(a) == 0 || len(b) == 0 {
		return fmt.Errorf("%w: start line %q", errMalformed, clip(line))
	}
	if !ok2 {
		c = nil // a status line may omit the reason phrase
	}
	h.line = [3][]byte{a, b, c}
	return nil
}

func (h *head) parseField(line []byte) error {
	f, err := parseField(line)
	if err != nil {
		return err
	}
	h.hdrs = append(h.hdrs, f)
	return nil
}

// parseField splits one header or trailer line (RFC 9110 section 5.5):
// a token, a colon, a value of visible characters, spaces, tabs and
// obs-text. A line starting with white space (obsolete folding) or
// holding any other control character is refused.
func parseField(line []byte) (field, error) {
	if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
		return field{}, fmt.Errorf("%w: obsolete line folding", errMalformed)
	}
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok || !isToken(string(name)) {
		return field{}, fmt.Errorf("%w: header line %q", errMalformed, clip(line))
	}
	if !fieldText(value) {
		return field{}, fmt.Errorf("%w: control character in %q", errMalformed, clip(name))
	}
	return field{name: name, value: bytes.Trim(value, " \t")}, nil
}

// fieldText reports whether b holds no control character but tab.
func fieldText(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// get returns the first value of the named header (case-insensitive).
func (h *head) get(name string) []byte {
	for _, f := range h.hdrs {
		if equalFold(f.name, name) {
			return f.value
		}
	}
	return nil
}

// has reports whether any value of the named header holds token, in its
// comma-separated list (case-insensitive).
func (h *head) has(name, token string) bool {
	for _, f := range h.hdrs {
		if equalFold(f.name, name) && listHas(f.value, token) {
			return true
		}
	}
	return false
}

// listHas reports whether a comma-separated header value holds token.
func listHas(v []byte, token string) bool {
	for len(v) > 0 {
		var item []byte
		item, v, _ = bytes.Cut(v, []byte(","))
		if equalFold(bytes.Trim(item, " \t"), token) {
			return true
		}
	}
	return false
}

// contentLength returns the Content-Length, -1 when absent. Repeated
// identical values are one value; differing or malformed ones are refused
// (RFC 9112 section 6.3, item 5).
func (h *head) contentLength() (int64, error) {
	n := int64(-1)
	for _, f := range h.hdrs {
		if !equalFold(f.name, "Content-Length") {
			continue
		}
		for _, item := range bytes.Split(f.value, []byte(",")) {
			v, err := parseLength(bytes.Trim(item, " \t"))
			if err != nil || (n >= 0 && v != n) {
				return 0, fmt.Errorf("%w: Content-Length %q", errMalformed, clip(f.value))
			}
			n = v
		}
	}
	return n, nil
}

func parseLength(b []byte) (int64, error) {
	if len(b) == 0 || len(b) > 18 {
		return 0, errMalformed
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errMalformed
		}
	}
	return strconv.ParseInt(string(b), 10, 64)
}

// transferEncoding reports whether the message has a Transfer-Encoding,
// and whether its last coding is chunked.
func (h *head) transferEncoding() (present, chunked bool) {
	var last []byte
	for _, f := range h.hdrs {
		if !equalFold(f.name, "Transfer-Encoding") {
			continue
		}
		present = true
		items := bytes.Split(f.value, []byte(","))
		last = bytes.Trim(items[len(items)-1], " \t")
	}
	return present, present && equalFold(last, "chunked")
}

// minor returns the minor version of "HTTP/1.x", or -1 for anything else.
func minor(version []byte) int {
	if len(version) != 8 || !bytes.HasPrefix(version, []byte("HTTP/1.")) {
		return -1
	}
	if c := version[7]; c >= '0' && c <= '9' {
		return int(c - '0')
	}
	return -1
}

// equalFold is ASCII case-insensitive comparison without allocating.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if x|0x20 != y|0x20 || x|0x20 < 'a' || x|0x20 > 'z' {
			return false
		}
	}
	return true
}

// hasPrefixFold is ASCII case-insensitive bytes.HasPrefix.
func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && equalFold(b[:len(prefix)], prefix)
}

// clip shortens bytes quoted in an error message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
