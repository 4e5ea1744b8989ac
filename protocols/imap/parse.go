package imap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxLiterals bounds the literals of one command before login.
const maxLiterals = 8

// Errors of the command reader. A *badError is answered BAD and the
// session goes on; the others end it.
var (
	errLineTooLong    = errors.New("line too long")
	errLiteralTooBig  = errors.New("non-synchronizing literal too big")
	errTooManyLiteral = errors.New("too many literals in one command")
)

// badError is a command that does not parse; tag is "*" when even the tag
// was unreadable.
type badError struct {
	tag string
	msg string
}

func (e *badError) Error() string { return e.msg }

// argKind tells the kinds of command arguments apart.
type argKind int

const (
	kindAtom   argKind = iota
	kindString         // quoted string or literal
	kindNIL
	kindList
)

// arg is one command argument (RFC 9051 section 4).
type arg struct {
	kind argKind
	s    string
	list []arg
}

// command is one client command before login.
type command struct {
	tag  string
	name string // upper case
	args []arg
}

// parser reads commands with literals (RFC 9051 section 4.3; RFC 7888 for
// non-synchronizing ones) from a reader whose buffer holds MaxLine bytes.
type parser struct {
	r          *bufio.Reader
	maxLiteral int
	// ready sends the continuation request of a synchronizing literal.
	ready func() error

	line     []byte // the current line, CRLF removed
	pos      int
	literals int
}

// readCommand reads and parses one command.
func (p *parser) readCommand() (*command, error) {
	if err := p.readLine(); err != nil {
		return nil, err
	}
	p.literals = 0
	tag := p.token(isTagChar)
	if tag == "" {
		return nil, &badError{tag: "*", msg: "Missing or invalid tag"}
	}
	if !p.skipSP() {
		return nil, &badError{tag: tag, msg: "Missing command"}
	}
	cmd := &command{tag: tag, name: strings.ToUpper(p.token(isAtomChar))}
	if cmd.name == "" {
		return nil, &badError{tag: tag, msg: "Missing command"}
	}
	for p.pos < len(p.line) {
		if !p.skipSP() {
			return nil, &badError{tag: tag, msg: "Expected a space between arguments"}
		}
		a, err := p.value(tag, 0)
		if err != nil {
			return nil, err
		}
		cmd.args = append(cmd.args, a)
	}
	return cmd, nil
}

// readLine reads the next line into p.line, without its CRLF (a bare LF
// is taken too).
func (p *parser) readLine() error {
	b, err := p.r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return errLineTooLong
	case err != nil:
		return err
	}
	p.line = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	p.line = append([]byte(nil), p.line...) // ReadSlice's bytes are overwritten by the next read
	p.pos = 0
	return nil
}

func (p *parser) skipSP() bool {
	if p.pos < len(p.line) && p.line[p.pos] == ' ' {
		p.pos++
		return true
	}
	return false
}

// token consumes the longest run of bytes ok accepts.
func (p *parser) token(ok func(byte) bool) string {
	start := p.pos
	for p.pos < len(p.line) && ok(p.line[p.pos]) {
		p.pos++
	}
	return string(p.line[start:p.pos])
}

// value parses one argument: atom, NIL, quoted string, literal or list.
func (p *parser) value(tag string, depth int) (arg, error) {
	if p.pos >= len(p.line) {
		return arg{}, &badError{tag: tag, msg: "Missing argument"}
	}
	switch p.line[p.pos] {
	case '"':
		s, err := p.quoted(tag)
		return arg{kind: kindString, s: s}, err
	case '{':
		s, err := p.literal(tag)
		return arg{kind: kindString, s: s}, err
	case '(':
		return p.list(tag, depth)
	}
	a := p.token(isAtomChar)
	switch {
	case a == "":
		return arg{}, &badError{tag: tag, msg: fmt.Sprintf("Unexpected %q", p.line[p.pos])}
	case strings.EqualFold(a, "NIL"):
		return arg{kind: kindNIL}, nil
	}
	return arg{kind: kindAtom, s: a}, nil
}

// quoted parses a quoted string; only \" and \\ may be escaped.
func (p *parser) quoted(tag string) (string, error) {
	var b strings.Builder
	for p.pos++; p.pos < len(p.line); p.pos++ {
		c := p.line[p.pos]
		switch {
		case c == '"':
			p.pos++
			return b.String(), nil
		case c == '\\' && p.pos+1 < len(p.line) && (p.line[p.pos+1] == '"' || p.line[p.pos+1] == '\\'):
			p.pos++
			b.WriteByte(p.line[p.pos])
		case c == '\\' || c == 0:
			return "", &badError{tag: tag, msg: "Invalid character in quoted string"}
		default:
			b.WriteByte(c)
		}
	}
	return "", &badError{tag: tag, msg: "Unterminated quoted string"}
}

// list parses a parenthesized list (as ID takes), at most 2 deep.
func (p *parser) list(tag string, depth int) (arg, error) {
	if depth >= 2 {
		return arg{}, &badError{tag: tag, msg: "Lists nested too deep"}
	}
	p.pos++
	l := arg{kind: kindList}
	for {
		if p.pos < len(p.line) && p.line[p.pos] == ')' {
			p.pos++
			return l, nil
		}
		if len(l.list) > 0 && !p.skipSP() {
			return arg{}, &badError{tag: tag, msg: "Expected a space or ) in list"}
		}
		v, err := p.value(tag, depth+1)
		if err != nil {
			return arg{}, err
		}
		l.list = append(l.list, v)
	}
}

// literal reads {n} or {n+} at the end of the line, then the n bytes and
// the rest of the command on the next line.
func (p *parser) literal(tag string) (string, error) {
	end := bytes.IndexByte(p.line[p.pos:], '}')
	if end < 0 || p.pos+end != len(p.line)-1 {
		return "", &badError{tag: tag, msg: "A literal must end the line"}
	}
	spec := string(p.line[p.pos+1 : p.pos+end])
	nonSync := strings.HasSuffix(spec, "+") // RFC 7888 section 3
	n, err := strconv.ParseUint(strings.TrimSuffix(spec, "+"), 10, 32)
	if err != nil {
		return "", &badError{tag: tag, msg: "Invalid literal length"}
	}
	if p.literals++; p.literals > maxLiterals {
		return "", errTooManyLiteral
	}
	if int(n) > p.maxLiteral {
		if nonSync {
			return "", errLiteralTooBig // its bytes are on the way: no way to resync
		}
		return "", &badError{tag: tag, msg: "[TOOBIG] Literal too big"}
	}
	if !nonSync {
		if err := p.ready(); err != nil {
			return "", err
		}
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(p.r, data); err != nil {
		return "", err
	}
	if err := p.readLine(); err != nil {
		return "", err
	}
	return string(data), nil
}

// isAtomChar accepts ATOM-CHAR (RFC 9051 section 9) and, leniently, the
// bytes above 0x7f of UTF-8 names.
func isAtomChar(c byte) bool {
	switch c {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return c > 0x1f && c != 0x7f
}

// isTagChar accepts the characters of a tag: ASTRING-CHAR except "+".
func isTagChar(c byte) bool { return c != '+' && (c == ']' || isAtomChar(c)) && c < 0x80 }
