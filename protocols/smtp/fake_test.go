package smtp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMTA is a hand-driven SMTP back-end for what smtptest cannot do: a
// chosen greeting and EHLO reply, canned replies per verb, XCLIENT, AUTH
// NTLM, and a record of every byte it received. Set the fields before
// startFake.
type fakeMTA struct {
	// Greeting is the first reply; "" means "220 fake.test ESMTP".
	Greeting string
	// Extensions follow the first line of the EHLO reply; nil means
	// PIPELINING, SIZE 10240000, 8BITMIME, ENHANCEDSTATUSCODES.
	Extensions []string
	// Replies replaces the reply to a verb (upper case), "DATA." being the
	// reply to the end of data. Several lines are joined with "\r\n".
	Replies map[string]string
	// Handle, if set, runs first for every command; true means it answered.
	Handle func(s *fakeSession, verb, arg string) bool

	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	recv  bytes.Buffer // every byte received, all sessions
	cmds  []string
	msgs  []string
}

// fakeSession is one connection to a fakeMTA.
type fakeSession struct {
	m  *fakeMTA
	c  net.Conn
	br *bufio.Reader
}

// startFake starts m on 127.0.0.1:0; it stops when the test ends.
func startFake(t testing.TB, m *fakeMTA) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	m.ln = ln
	m.wg.Add(1)
	go m.accept()
	t.Cleanup(m.close)
	return ln.Addr().String()
}

func (m *fakeMTA) accept() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		m.mu.Lock()
		m.conns = append(m.conns, c)
		m.mu.Unlock()
		m.wg.Add(1)
		go m.serve(c)
	}
}

func (m *fakeMTA) close() {
	m.ln.Close()
	m.mu.Lock()
	for _, c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// recorder copies what the session reads into the fake's record.
type recorder struct{ m *fakeMTA }

func (r recorder) Write(p []byte) (int, error) {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	return r.m.recv.Write(p)
}

func (m *fakeMTA) serve(c net.Conn) {
	defer m.wg.Done()
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	s := &fakeSession{m: m, c: c, br: bufio.NewReader(io.TeeReader(c, recorder{m}))}
	s.say(or(m.Greeting, "220 fake.test ESMTP"))
	for {
		line, err := s.line()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		m.mu.Lock()
		m.cmds = append(m.cmds, line)
		m.mu.Unlock()
		if m.Handle != nil && m.Handle(s, verb, arg) {
			continue
		}
		if !s.standard(verb, arg) {
			return
		}
	}
}

// standard answers the usual commands; false ends the session.
func (s *fakeSession) standard(verb, arg string) bool {
	if r, ok := s.m.Replies[verb]; ok && verb != "DATA" {
		s.say(r)
		return !strings.HasPrefix(r, "421")
	}
	switch verb {
	case "EHLO":
		exts := s.m.Extensions
		if exts == nil {
			exts = []string{"PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES"}
		}
		s.multi(250, append([]string{"fake.test Hello " + arg}, exts...))
	case "HELO", "MAIL", "RCPT", "RSET", "NOOP":
		s.say("250 2.0.0 OK")
	case "XCLIENT":
		s.say(or(s.m.Greeting, "220 fake.test ESMTP"))
	case "DATA":
		return s.data()
	case "QUIT":
		s.say("221 2.0.0 Bye")
		return false
	default:
		s.say("502 5.5.2 Command not recognized")
	}
	return true
}

// data reads a message up to CRLF.CRLF and records it as sent on the
// wire (dot-stuffed).
func (s *fakeSession) data() bool {
	if r, ok := s.m.Replies["DATA"]; ok {
		s.say(r)
		return true
	}
	s.say("354 End data with <CR><LF>.<CR><LF>")
	var msg strings.Builder
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			return false
		}
		if line == ".\r\n" {
			break
		}
		msg.WriteString(line)
	}
	s.m.mu.Lock()
	s.m.msgs = append(s.m.msgs, msg.String())
	s.m.mu.Unlock()
	s.say(or(s.m.Replies["DATA."], "250 2.0.0 Ok: queued as FAKE1"))
	return true
}

func (s *fakeSession) line() (string, error) {
	s.c.SetDeadline(time.Now().Add(wait))
	l, err := s.br.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

func (s *fakeSession) say(reply string) {
	io.WriteString(s.c, reply+"\r\n")
}

func (s *fakeSession) multi(code int, lines []string) {
	var b strings.Builder
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		fmt.Fprintf(&b, "%d%s%s\r\n", code, sep, l)
	}
	io.WriteString(s.c, b.String())
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// commands returns the command lines received so far.
func (m *fakeMTA) commands() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.cmds...)
}

// messages returns the messages received so far, as sent on the wire.
func (m *fakeMTA) messages() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.msgs...)
}

// received returns every byte received so far.
func (m *fakeMTA) received() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recv.String()
}

// hasCommand reports whether a command line beginning with prefix came.
func (m *fakeMTA) hasCommand(prefix string) bool {
	for _, c := range m.commands() {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}
