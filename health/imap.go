package health

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// IMAP checks an IMAP server (RFC 9051, RFC 3501): a "* OK" or "* PREAUTH"
// greeting ("* BYE" means the server refuses service), optionally STARTTLS
// and the TLS handshake, then LOGOUT answered with a tagged OK. After a
// failed step LOGOUT is still sent if the server listens, that is unless
// it failed by saying BYE.
type IMAP struct {
	// StartTLS upgrades with STARTTLS before LOGOUT. A PREAUTH greeting
	// then fails: the session is already authenticated in the clear.
	StartTLS bool
	// ImplicitTLS speaks TLS from the first byte (imaps, port 993).
	ImplicitTLS bool
	// TLSConfig is the client TLS configuration; nil verifies the server
	// against the system roots, naming the host in the address.
	TLSConfig *stdtls.Config
	// Dial opens the TCP connection; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Probe runs the IMAP conversation against addr.
func (p *IMAP) Probe(ctx context.Context, addr string) error {
	a, err := begin(ctx, "imap", p.Dial, addr)
	if err != nil {
		return err
	}
	defer a.end()
	var conn net.Conn = a.raw
	if p.ImplicitTLS {
		if conn, err = a.handshake(p.TLSConfig, ""); err != nil {
			return err
		}
	}
	s := &imapSession{dialogue: newDialogue(a, conn)}
	if err := p.converse(s); err != nil {
		if !s.bye {
			tag := s.nextTag()
			s.farewell(err, tag+" LOGOUT", func(line string) bool { return strings.HasPrefix(line, tag+" ") })
		}
		return err
	}
	status, err := s.command("LOGOUT")
	if err != nil {
		return err
	}
	if !hasPrefixFold(status, "OK") {
		return s.unwanted("LOGOUT", "LOGOUT answered", status)
	}
	return nil
}

// converse runs everything before LOGOUT.
func (p *IMAP) converse(s *imapSession) error {
	greeting, err := s.line()
	if err != nil {
		return s.broke("greeting", err)
	}
	preauth := untagged(greeting, "PREAUTH")
	if !untagged(greeting, "OK") && !preauth {
		s.bye = untagged(greeting, "BYE")
		return s.unwanted("greeting", "greeting was", greeting)
	}
	if !p.StartTLS {
		return nil
	}
	if preauth {
		return s.fail(StageProtocol, "greeting", errors.New("greeting was PREAUTH, which leaves no room for STARTTLS"))
	}
	status, err := s.command("STARTTLS")
	if err != nil {
		return err
	}
	if !hasPrefixFold(status, "OK") {
		return s.unwanted("STARTTLS", "STARTTLS answered", status)
	}
	return s.upgrade("STARTTLS", p.TLSConfig)
}

// imapSession is a dialogue with numbered command tags.
type imapSession struct {
	*dialogue
	n   int  // commands sent
	bye bool // the server said BYE and is closing the connection
}

// nextTag numbers the next command: a1, a2, ...
func (s *imapSession) nextTag() string {
	s.n++
	return "a" + strconv.Itoa(s.n)
}

// command sends cmd under a fresh tag and returns its tagged status ("OK
// ...", "NO ...", "BAD ..."), skipping untagged data.
func (s *imapSession) command(cmd string) (string, error) {
	tag := s.nextTag()
	if err := s.send(tag + " " + cmd); err != nil {
		return "", s.broke(cmd, err)
	}
	for range maxLines {
		line, err := s.line()
		if err != nil {
			return "", s.broke(cmd, err)
		}
		if status, ok := strings.CutPrefix(line, tag+" "); ok {
			return status, nil
		}
	}
	return "", s.fail(StageProtocol, cmd, fmt.Errorf("%s: no tagged reply in %d lines", cmd, maxLines))
}

// untagged reports whether line is the untagged response "* <word> ...".
func untagged(line, word string) bool {
	prefix := "* " + word
	return hasPrefixFold(line, prefix) && (len(line) == len(prefix) || line[len(prefix)] == ' ')
}
