package imap

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/gatehouse-proxy/gatehouse/protocols/internal/maillogin"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// Bounds on what a back-end may send before the splice.
const (
	maxBackendLine = 8192
	maxUntagged    = 100
)

// leg is gatehouse's conversation, as an IMAP client, with one back-end.
type leg struct {
	*maillogin.Leg
	clientTag string // the client's tag of the login, for a refusal
	tags      int
}

// backendLogin runs the back-end side after the PROXY header and implicit
// TLS up to its answer to LOGIN: greeting, STARTTLS, ID, LOGIN. It returns
// the untagged lines that came with the answer and the answer, under the
// client's tag; a NO is a *maillogin.RefusedError.
func (s *session) backendLogin(l *leg, user, pass string) (string, error) {
	if err := l.greeting(); err != nil {
		return "", err
	}
	if s.f.BackendTLSMode == proxy.TLSStartTLS {
		if err := l.startTLS(); err != nil {
			return "", err
		}
	}
	if id := s.backendID(); id != "" {
		// ID is informational (RFC 2971): a back-end's NO changes nothing.
		if _, _, err := l.command("ID " + id); err != nil {
			return "", err
		}
	}
	ok, err := l.login(user, pass)
	if err != nil {
		return "", err
	}
	ok[len(ok)-1] = l.clientTag + " " + ok[len(ok)-1]
	return strings.Join(ok, "\r\n"), nil
}

// greeting wants "* OK": PREAUTH would skip the login (and STARTTLS with
// it), BYE refuses the connection (RFC 9051 section 7.1).
func (l *leg) greeting() error {
	line, err := l.ReadLine()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "* OK") {
		return fmt.Errorf("back-end %s greeted with %q", l.Name, line)
	}
	return nil
}

// startTLS upgrades with STARTTLS (RFC 9051 section 6.2.1). A back-end
// that sends anything after its OK is not trusted.
func (l *leg) startTLS() error {
	_, status, err := l.command("STARTTLS")
	if err != nil {
		return err
	}
	if !strings.HasPrefix(status, "OK") {
		return fmt.Errorf("back-end %s answered STARTTLS with %q", l.Name, status)
	}
	return l.StartTLS("STARTTLS")
}

// login sends LOGIN with the credentials as quoted strings, or as
// synchronizing literals when they hold bytes a quoted string cannot.
func (l *leg) login(user, pass string) ([]string, error) {
	tag := l.nextTag()
	var buf bytes.Buffer
	buf.WriteString(tag + " LOGIN ")
	for i, v := range []string{user, pass} {
		if i > 0 {
			buf.WriteByte(' ')
		}
		if quotable(v) {
			buf.WriteString(quote(v))
			continue
		}
		fmt.Fprintf(&buf, "{%d}\r\n", len(v))
		if err := l.literalGoAhead(&buf); err != nil {
			return nil, err
		}
		buf.WriteString(v)
	}
	buf.WriteString("\r\n")
	if _, err := l.Conn.Write(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("back-end %s: %w", l.Name, err)
	}
	untagged, status, err := l.response(tag)
	switch {
	case err != nil:
		return nil, err
	case strings.HasPrefix(status, "NO"):
		return nil, refused(l.Name, l.clientTag, strings.TrimPrefix(status, "NO"))
	case !strings.HasPrefix(status, "OK"):
		return nil, fmt.Errorf("back-end %s answered LOGIN with %q", l.Name, status)
	}
	return append(untagged, status), nil
}

// literalGoAhead sends buf and waits for the "+" that invites a literal.
func (l *leg) literalGoAhead(buf *bytes.Buffer) error {
	if _, err := l.Conn.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("back-end %s: %w", l.Name, err)
	}
	buf.Reset()
	line, err := l.ReadLine()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+") {
		return fmt.Errorf("back-end %s refused a literal: %q", l.Name, line)
	}
	return nil
}

// command sends one command under a new tag and returns the untagged
// lines and the tagged status ("OK …", "NO …", "BAD …").
func (l *leg) command(cmd string) (untagged []string, status string, err error) {
	tag := l.nextTag()
	if err := l.Send(tag + " " + cmd); err != nil {
		return nil, "", err
	}
	untagged, status, err = l.response(tag)
	return untagged, status, err
}

// response reads up to the line tagged tag. Only that exact tag ends the
// response: a guessed tag in an injected line would not match.
func (l *leg) response(tag string) (untagged []string, status string, err error) {
	for range maxUntagged {
		line, err := l.ReadLine()
		if err != nil {
			return nil, "", err
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			return untagged, rest, nil
		}
		if strings.HasPrefix(line, "* BYE") {
			return nil, "", fmt.Errorf("back-end %s said %q", l.Name, line)
		}
		untagged = append(untagged, line)
	}
	return nil, "", fmt.Errorf("back-end %s sent more than %d lines before its answer", l.Name, maxUntagged)
}

// nextTag returns gatehouse's own tag for the next back-end command.
func (l *leg) nextTag() string {
	l.tags++
	return "gh" + strconv.Itoa(l.tags)
}

// backendID is the ID list sent before LOGIN: the client's own fields and,
// with forward: id, Dovecot's x-originating and x-connected fields
// (https://doc.dovecot.org/ "forwarding"). "" means send no ID.
func (s *session) backendID() string {
	var kv []string
	if s.cfg.Forward == ForwardID {
		local := maillogin.AddrPort(s.Raw.LocalAddr())
		kv = append(kv,
			"x-originating-ip", s.Client.Addr().String(),
			"x-originating-port", strconv.Itoa(int(s.Client.Port())),
			"x-connected-ip", local.Addr().String(),
			"x-connected-port", strconv.Itoa(int(local.Port())))
	}
	var out []string
	for i := 0; i < len(kv); i += 2 {
		out = append(out, quote(kv[i])+" "+quote(kv[i+1]))
	}
	for _, f := range s.id {
		if !quotable(f.key) || (f.value != nil && !quotable(*f.value)) {
			continue
		}
		v := "NIL"
		if f.value != nil {
			v = quote(*f.value)
		}
		out = append(out, quote(f.key)+" "+v)
	}
	if len(out) == 0 {
		return ""
	}
	return "(" + strings.Join(out, " ") + ")"
}

// quotable reports whether s fits a quoted string (RFC 9051 section 4.3:
// 7-bit, no CR, LF or NUL).
func quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c == '\r' || c == '\n' || c >= 0x80 {
			return false
		}
	}
	return true
}

// quote returns s as a quoted string, escaping \ and ".
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
