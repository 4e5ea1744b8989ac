package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/maillogin"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// errLineTooLong is a client line longer than Config.MaxLine.
var errLineTooLong = errors.New("line too long")

// preauth runs the AUTHORIZATION state (RFC 1939 section 4) until a login
// succeeds (it returns the back-end to splice to) or the session ends
// (it returns nil).
func (s *session) preauth() *maillogin.Handoff {
	s.R = bufio.NewReaderSize(s.Conn, s.cfg.MaxLine)
	if s.Reply("+OK "+s.cfg.Greeting) != nil {
		return nil
	}
	for {
		line, err := s.readLine()
		if err != nil {
			s.readFailed(err)
			return nil
		}
		if s.commands++; s.commands > s.cfg.MaxCommands {
			s.Reply("-ERR Too many commands before login")
			s.Log.Info("session", "outcome", "too_many_commands")
			return nil
		}
		if h, end := s.command(line); h != nil || end {
			return h
		}
	}
}

// readLine reads one line (CRLF or bare LF) of at most MaxLine bytes.
func (s *session) readLine() (string, error) {
	b, err := s.R.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return "", errLineTooLong
	case err != nil:
		return "", err
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	return string(b), nil
}

// readFailed says goodbye as the reason for a failed read deserves.
func (s *session) readFailed(err error) {
	// The pre-auth deadline covers writes too; the goodbye gets a moment.
	s.Raw.SetWriteDeadline(time.Now().Add(time.Second))
	outcome := "closed"
	switch {
	case s.Draining.Load():
		s.Reply("-ERR [SYS/TEMP] Server shutting down, try again later")
		outcome = "shutdown"
	case errors.Is(err, errLineTooLong):
		s.Reply("-ERR Line too long")
		outcome = "line_too_long"
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.Reply("-ERR Disconnected for inactivity")
		outcome = "timeout"
	case !errors.Is(err, io.EOF):
		outcome = "error"
	}
	s.Log.Info("session", "outcome", outcome, "user", s.user)
}

// command serves one command line.
func (s *session) command(line string) (h *maillogin.Handoff, end bool) {
	verb, arg, _ := strings.Cut(line, " ")
	switch strings.ToUpper(verb) {
	case "CAPA":
		return nil, s.capa() != nil
	case "STLS":
		return nil, !s.stls()
	case "USER":
		return nil, s.userCmd(arg) != nil
	case "PASS":
		return s.pass(arg)
	case "AUTH":
		return s.auth(arg)
	case "QUIT":
		s.Reply("+OK Bye")
		s.Log.Info("session", "outcome", "quit")
		return nil, true
	}
	return nil, s.Reply("-ERR Unknown command, or not valid before login") != nil
}

// capa lists the capabilities (RFC 2449 section 5): the edge's own now,
// and those the back-end serves after login.
func (s *session) capa() error {
	var b strings.Builder
	b.WriteString("+OK Capability list follows\r\n")
	if s.offersSTLS() {
		b.WriteString("STLS\r\n") // RFC 2595 section 4
	}
	if s.loginAllowed() {
		b.WriteString("USER\r\nSASL PLAIN LOGIN\r\n") // RFC 5034 section 3
	}
	for _, c := range s.cfg.Capabilities {
		b.WriteString(c + "\r\n")
	}
	b.WriteString("IMPLEMENTATION gatehouse\r\n.")
	return s.Reply(b.String())
}

func (s *session) offersSTLS() bool {
	return !s.TLS && s.f.EdgeTLS != nil && s.f.TLSMode == proxy.TLSStartTLS
}

func (s *session) loginAllowed() bool { return s.TLS || !s.f.TLSRequired }

// refuseCleartext answers a login command on a connection that must use
// TLS first; it reports false when it did so.
func (s *session) refuseCleartext() bool {
	if s.loginAllowed() {
		return true
	}
	s.Reply("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
	return false
}

// stls upgrades the connection (RFC 2595 section 4). It reports false
// when the session must end.
func (s *session) stls() bool {
	if !s.offersSTLS() {
		return s.Reply("-ERR STLS not available") == nil
	}
	if s.Reply("+OK Begin TLS negotiation") != nil {
		return false
	}
	if !s.StartTLS("STLS") {
		return false
	}
	// RFC 2595 section 4: the client forgets what it learned; so do we.
	s.user = ""
	s.R = bufio.NewReaderSize(s.Conn, s.cfg.MaxLine)
	return true
}

func (s *session) userCmd(arg string) error {
	if !s.refuseCleartext() {
		return nil
	}
	if arg == "" {
		return s.Reply("-ERR USER needs a name")
	}
	s.user = arg
	return s.Reply("+OK")
}

// pass takes the rest of the line as the password: RFC 1939 section 7
// lets it contain spaces.
func (s *session) pass(arg string) (*maillogin.Handoff, bool) {
	if !s.refuseCleartext() {
		return nil, false
	}
	if s.user == "" {
		return nil, s.Reply("-ERR USER first") != nil
	}
	user := s.user
	s.user = ""
	return s.login(user, arg, LoginUser)
}
