package pop3test

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// maildrop is a logged-in session's view of its mailbox: the messages as
// they were at login, and which of them DELE has marked.
type maildrop struct {
	user    string
	msgs    []message
	deleted []bool
}

// lock gives user's maildrop to one session at a time (RFC 1939 §8: the
// server acquires an exclusive-access lock at login).
func (s *Server) lock(user string) (*maildrop, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.boxes[user]
	if b == nil || b.locked {
		return nil, false
	}
	b.locked = true
	msgs := append([]message(nil), b.msgs...)
	return &maildrop{user: user, msgs: msgs, deleted: make([]bool, len(msgs))}, true
}

func (s *Server) release(user string) {
	s.mu.Lock()
	if b := s.boxes[user]; b != nil {
		b.locked = false
	}
	s.mu.Unlock()
}

// commit removes the messages d marked deleted, releases the lock, and
// reports how many messages remain.
func (s *Server) commit(d *maildrop) int {
	gone := make(map[string]bool)
	for i, m := range d.msgs {
		if d.deleted[i] {
			gone[m.uid] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.boxes[d.user]
	kept := b.msgs[:0:0]
	for _, m := range b.msgs {
		if !gone[m.uid] {
			kept = append(kept, m)
		}
	}
	b.msgs, b.locked = kept, false
	return len(kept)
}

// stat counts the messages not marked deleted and their octets.
func (d *maildrop) stat() (n, size int) {
	for i, m := range d.msgs {
		if !d.deleted[i] {
			n++
			size += len(m.data)
		}
	}
	return n, size
}

// get parses a message number and returns its index, or an error text for
// -ERR.
func (d *maildrop) get(arg string) (int, string) {
	n, err := strconv.Atoi(arg)
	switch {
	case err != nil || n < 1 || n > len(d.msgs):
		return 0, "no such message"
	case d.deleted[n-1]:
		return 0, fmt.Sprintf("message %d already deleted", n)
	}
	return n - 1, ""
}

// transaction answers the commands of RFC 1939 §5's TRANSACTION state.
func (s *session) transaction(verb, arg string) {
	switch verb {
	case "STAT":
		n, size := s.drop.stat()
		s.reply("+OK %d %d", n, size)
	case "LIST", "UIDL":
		s.listing(verb, arg)
	case "RETR":
		s.retr(arg)
	case "TOP":
		s.top(arg)
	case "DELE":
		s.dele(arg)
	case "RSET":
		clear(s.drop.deleted)
		n, size := s.drop.stat()
		s.reply("+OK maildrop has %d messages (%d octets)", n, size)
	case "NOOP":
		s.reply("+OK")
	default:
		s.fail("unknown command in TRANSACTION state")
	}
}

// listing answers LIST and UIDL, for one message or, without an argument, as
// a multi-line list of all messages not marked deleted.
func (s *session) listing(verb, arg string) {
	info := func(i int) string {
		if verb == "UIDL" {
			return fmt.Sprintf("%d %s", i+1, s.drop.msgs[i].uid)
		}
		return fmt.Sprintf("%d %d", i+1, len(s.drop.msgs[i].data))
	}
	if arg != "" {
		i, bad := s.drop.get(arg)
		if bad != "" {
			s.fail("%s", bad)
			return
		}
		s.reply("+OK %s", info(i))
		return
	}
	n, size := s.drop.stat()
	fmt.Fprintf(s.w, "+OK %d messages (%d octets)\r\n", n, size)
	for i := range s.drop.msgs {
		if !s.drop.deleted[i] {
			fmt.Fprintf(s.w, "%s\r\n", info(i))
		}
	}
	s.w.WriteString(".\r\n")
	s.flush()
}

func (s *session) retr(arg string) {
	i, bad := s.drop.get(arg)
	if bad != "" {
		s.fail("%s", bad)
		return
	}
	data := s.drop.msgs[i].data
	fmt.Fprintf(s.w, "+OK %d octets\r\n", len(data))
	s.writeDotStuffed(data)
}

// top sends the header, the blank line, and the first n body lines (RFC 1939
// §7 TOP).
func (s *session) top(arg string) {
	num, count, _ := strings.Cut(arg, " ")
	i, bad := s.drop.get(num)
	if bad != "" {
		s.fail("%s", bad)
		return
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 {
		s.fail("TOP needs a message number and a line count")
		return
	}
	s.w.WriteString("+OK top of message follows\r\n")
	s.writeDotStuffed(topLines(s.drop.msgs[i].data, n))
}

// topLines cuts data after its header and n body lines. data ends in CRLF.
func topLines(data []byte, n int) []byte {
	end := bytes.Index(data, []byte("\r\n\r\n"))
	if end < 0 {
		return data // no body
	}
	end += 4
	for ; n > 0 && end < len(data); n-- {
		end += bytes.Index(data[end:], []byte("\r\n")) + 2
	}
	return data[:end]
}

// writeDotStuffed sends data as a multi-line response body: a line starting
// with "." gets another in front, and a line holding "." ends the response
// (RFC 1939 §3).
func (s *session) writeDotStuffed(data []byte) {
	for len(data) > 0 {
		line, rest, _ := bytes.Cut(data, []byte("\r\n"))
		if bytes.HasPrefix(line, []byte(".")) {
			s.w.WriteByte('.')
		}
		s.w.Write(line)
		s.w.WriteString("\r\n")
		data = rest
	}
	s.w.WriteString(".\r\n")
	s.flush()
}

func (s *session) dele(arg string) {
	i, bad := s.drop.get(arg)
	if bad != "" {
		s.fail("%s", bad)
		return
	}
	s.drop.deleted[i] = true
	s.reply("+OK message %d deleted", i+1)
}
