package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// Bounds on what gatehouse reads from a back-end by hand. RFC 5321 section
// 4.5.3.1.5 allows 512 bytes per reply line; real servers stay far below
// these.
const (
	maxReplyLine  = 4096
	maxReplyLines = 128
)

var (
	errLineTooLong = errors.New("line too long")
	errBadReply    = errors.New("malformed reply")
)

// reply is one SMTP reply as a back-end sent it: the code and the text of
// each line, "250-" and "250 " stripped.
type reply struct {
	Code  int
	Lines []string
}

// String renders the reply on one line for logs.
func (r reply) String() string {
	return strconv.Itoa(r.Code) + " " + strings.Join(r.Lines, " / ")
}

// wire renders the reply as it goes on the wire, CRLF after each line.
func (r reply) wire() []byte {
	var b bytes.Buffer
	for i, l := range r.Lines {
		sep := "-"
		if i == len(r.Lines)-1 {
			sep = " "
		}
		fmt.Fprintf(&b, "%03d%s%s\r\n", r.Code, sep, l)
	}
	return b.Bytes()
}

// smtpError turns the reply into the error go-smtp writes back to the
// client, enhanced code split off (RFC 2034 section 4) so that go-smtp
// prints it once.
func (r reply) smtpError() *gosmtp.SMTPError {
	e := &gosmtp.SMTPError{Code: r.Code}
	lines := append([]string(nil), r.Lines...)
	if ec, rest, ok := cutEnhanced(lines[len(lines)-1]); ok {
		e.EnhancedCode = ec
		for i := range lines {
			if _, text, ok := cutEnhanced(lines[i]); ok {
				lines[i] = text
			}
		}
		lines[len(lines)-1] = rest
	}
	e.Message = strings.Join(lines, "\n")
	return e
}

// cutEnhanced splits "5.1.1 text" into the enhanced status code and text
// (RFC 3463 section 2: class.subject.detail).
func cutEnhanced(s string) (gosmtp.EnhancedCode, string, bool) {
	code, text, _ := strings.Cut(s, " ")
	parts := strings.Split(code, ".")
	if len(parts) != 3 {
		return gosmtp.EnhancedCode{}, s, false
	}
	var ec gosmtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || len(p) > 3 {
			return gosmtp.EnhancedCode{}, s, false
		}
		ec[i] = n
	}
	if ec[0] < 2 || ec[0] > 5 {
		return gosmtp.EnhancedCode{}, s, false
	}
	return ec, text, true
}

// readReply reads one reply, single- or multi-line (RFC 5321 section
// 4.2.1): every line starts with the same three-digit code, followed by
// "-" on all lines but the last.
func readReply(br *bufio.Reader) (reply, error) {
	var r reply
	for len(r.Lines) < maxReplyLines {
		line, err := readLine(br)
		if err != nil {
			return r, err
		}
		code, last, text, err := parseReplyLine(line)
		if err != nil {
			return r, err
		}
		if r.Lines != nil && code != r.Code {
			return r, fmt.Errorf("%w: code %d inside a %d reply", errBadReply, code, r.Code)
		}
		r.Code = code
		r.Lines = append(r.Lines, text)
		if last {
			return r, nil
		}
	}
	return r, fmt.Errorf("%w: more than %d lines", errBadReply, maxReplyLines)
}

// readLine returns one line without its CRLF (or bare LF, which some
// back-ends send). It refuses lines longer than the reader's buffer.
func readLine(br *bufio.Reader) (string, error) {
	b, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", errLineTooLong
	}
	if err != nil {
		return "", err
	}
	b = bytes.TrimSuffix(b[:len(b)-1], []byte("\r"))
	return string(b), nil
}

// parseReplyLine splits "250-text" or "250 text" (or a bare "250").
func parseReplyLine(line string) (code int, last bool, text string, err error) {
	if len(line) < 3 || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
		return 0, false, "", fmt.Errorf("%w: %q", errBadReply, truncate(line, 64))
	}
	code, err = strconv.Atoi(line[:3])
	if err != nil || code < 200 || code > 599 || line[0] == '+' {
		return 0, false, "", fmt.Errorf("%w: %q", errBadReply, truncate(line, 64))
	}
	if len(line) == 3 {
		return code, true, "", nil
	}
	return code, line[3] == ' ', line[4:], nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// capabilities are the extensions of an EHLO reply: keyword (upper case)
// to its parameters (RFC 5321 section 4.1.1.1).
type capabilities map[string]string

// parseEHLO reads the capabilities of a 250 EHLO reply; the first line is
// the server's greeting and names no extension.
func parseEHLO(r reply) capabilities {
	caps := make(capabilities, len(r.Lines))
	for _, l := range r.Lines[min(1, len(r.Lines)):] {
		kw, params, _ := strings.Cut(strings.TrimSpace(l), " ")
		if kw == "" {
			continue
		}
		caps[strings.ToUpper(kw)] = strings.TrimSpace(params)
	}
	return caps
}

// has reports whether the extension is offered.
func (c capabilities) has(kw string) bool {
	_, ok := c[kw]
	return ok
}

// size returns the SIZE limit (RFC 1870 section 4); 0 means the extension
// is absent or declares no fixed limit.
func (c capabilities) size() int64 {
	n, err := strconv.ParseInt(c["SIZE"], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// authMechanism reports whether AUTH offers mech (RFC 4954 section 3).
func (c capabilities) authMechanism(mech string) bool {
	for _, m := range strings.Fields(c["AUTH"]) {
		if strings.EqualFold(m, mech) {
			return true
		}
	}
	return false
}

// extensions are the optional extensions gatehouse advertises only when
// its back-ends have them.
type extensions struct {
	size int64 // the smallest SIZE limit; 0 means none known
	utf8 bool  // SMTPUTF8 (RFC 6531)
	dsn  bool  // DSN (RFC 3461)
}

// capCache remembers each back-end's latest EHLO capabilities, so that an
// extension is advertised only when every back-end seen offers it: a
// message must not depend on which back-end a session happened to reach.
type capCache struct {
	mu   sync.Mutex
	seen map[string]capabilities
}

// learn records what a back-end just advertised.
func (cc *capCache) learn(backend string, caps capabilities) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.seen == nil {
		cc.seen = make(map[string]capabilities)
	}
	cc.seen[backend] = caps
}

// common returns the extensions that current offers and that every other
// back-end of the pool offered when last seen. Back-ends never seen yet do
// not count: the current one always does, so a session never promises
// what its own back-end lacks.
func (cc *capCache) common(pool []*proxy.Backend, current capabilities) extensions {
	ext := extensions{size: current.size(), utf8: current.has("SMTPUTF8"), dsn: current.has("DSN")}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, b := range pool {
		caps, ok := cc.seen[b.Name]
		if !ok {
			continue
		}
		ext.utf8 = ext.utf8 && caps.has("SMTPUTF8")
		ext.dsn = ext.dsn && caps.has("DSN")
		if n := caps.size(); n > 0 && (ext.size == 0 || n < ext.size) {
			ext.size = n
		}
	}
	return ext
}
