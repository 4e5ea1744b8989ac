package imap

import (
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/maillogin"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// preauth runs the not-authenticated state (RFC 9051 section 3.1) until a
// login succeeds (it returns the back-end to splice to) or the session
// ends (it returns nil).
func (s *session) preauth() *maillogin.Handoff {
	s.setReader()
	// RFC 9051 section 7.1.1: the greeting may carry the capabilities.
	if s.Reply("* OK [CAPABILITY "+s.capabilities()+"] "+s.cfg.Greeting) != nil {
		return nil
	}
	for {
		cmd, err := s.p.readCommand()
		var bad *badError
		switch {
		case errors.As(err, &bad):
			if s.count() && s.Reply(bad.tag+" BAD "+bad.msg) == nil {
				continue
			}
			return nil
		case err != nil:
			s.readFailed(err)
			return nil
		}
		if !s.count() {
			return nil
		}
		if h, end := s.command(cmd); h != nil || end {
			return h
		}
	}
}

// count counts a command against MaxCommands; past it the session ends.
func (s *session) count() bool {
	if s.commands++; s.commands <= s.cfg.MaxCommands {
		return true
	}
	s.Reply("* BYE Too many commands before login")
	s.Log.Info("session", "outcome", "too_many_commands")
	return false
}

// readFailed says goodbye as the reason for a failed read deserves.
func (s *session) readFailed(err error) {
	// The pre-auth deadline covers writes too; the goodbye gets a moment.
	s.Raw.SetWriteDeadline(time.Now().Add(time.Second))
	outcome := "closed"
	switch {
	case s.Draining.Load():
		s.Reply("* BYE [UNAVAILABLE] Server shutting down, try again later")
		outcome = "shutdown"
	case errors.Is(err, errLineTooLong), errors.Is(err, errLiteralTooBig), errors.Is(err, errTooManyLiteral):
		s.Reply("* BYE " + upperFirst(err.Error()))
		outcome = "too_long"
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.Reply("* BYE Autologout; idle for too long")
		outcome = "timeout"
	case !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
		outcome = "error"
	}
	s.Log.Info("session", "outcome", outcome)
}

// command serves one command.
func (s *session) command(cmd *command) (h *maillogin.Handoff, end bool) {
	switch cmd.name {
	case "CAPABILITY":
		return nil, s.Reply("* CAPABILITY "+s.capabilities(), cmd.tag+" OK CAPABILITY completed") != nil
	case "NOOP":
		return nil, s.Reply(cmd.tag+" OK NOOP completed") != nil
	case "LOGOUT":
		s.Reply("* BYE Logging out", cmd.tag+" OK LOGOUT completed")
		s.Log.Info("session", "outcome", "logout")
		return nil, true
	case "STARTTLS":
		return nil, !s.startTLS(cmd)
	case "ID":
		return nil, s.idCmd(cmd) != nil
	case "LOGIN":
		return s.loginCmd(cmd)
	case "AUTHENTICATE":
		return s.authenticate(cmd)
	}
	return nil, s.Reply(cmd.tag+" BAD Command unknown or not valid before login") != nil
}

// capabilities lists what the client may use now.
func (s *session) capabilities() string {
	caps := append([]string(nil), s.cfg.Capabilities...)
	if s.offersSTARTTLS() {
		caps = append(caps, "STARTTLS")
	}
	if s.loginAllowed() {
		caps = append(caps, "AUTH=PLAIN", "AUTH=LOGIN")
	} else {
		caps = append(caps, "LOGINDISABLED") // RFC 9051 section 6.2.3
	}
	return strings.Join(caps, " ")
}

func (s *session) offersSTARTTLS() bool {
	return !s.TLS && s.f.EdgeTLS != nil && s.f.TLSMode == proxy.TLSStartTLS
}

func (s *session) loginAllowed() bool { return s.TLS || !s.f.TLSRequired }

// startTLS upgrades the connection (RFC 9051 section 6.2.1). It reports
// false when the session must end.
func (s *session) startTLS(cmd *command) bool {
	if !s.offersSTARTTLS() {
		return s.Reply(cmd.tag+" BAD STARTTLS not available") == nil
	}
	if s.Reply(cmd.tag+" OK Begin TLS negotiation now") != nil {
		return false
	}
	if !s.StartTLS("STARTTLS") {
		return false
	}
	// The client must forget what it learned before TLS; so do we.
	s.id = nil
	s.setReader()
	return true
}

// loginCmd serves LOGIN with two astrings (RFC 9051 section 6.2.3).
func (s *session) loginCmd(cmd *command) (*maillogin.Handoff, bool) {
	if !s.loginAllowed() {
		return nil, s.Reply(cmd.tag+" NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS") != nil
	}
	if len(cmd.args) != 2 || !isAstring(cmd.args[0]) || !isAstring(cmd.args[1]) {
		return nil, s.Reply(cmd.tag+" BAD LOGIN takes a user name and a password") != nil
	}
	return s.login(cmd.tag, cmd.args[0].s, cmd.args[1].s, "login")
}

func isAstring(a arg) bool { return a.kind == kindAtom || a.kind == kindString }

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
