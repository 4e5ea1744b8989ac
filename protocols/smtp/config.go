package smtp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Modes of an SMTP listener, the values of Config.Mode.
const (
	// ModeRelay terminates SMTP: gatehouse is the server the client sees and
	// a client of the back-end, command by command.
	ModeRelay = "relay"
	// ModePassthrough handles greeting, EHLO and STARTTLS at the edge, then
	// splices the bytes untouched (AUTH NTLM, GSSAPI, X-EXPS…).
	ModePassthrough = "passthrough"
)

// AUTH policies, the values of Config.Auth.
const (
	// AuthNone offers no AUTH at the edge.
	AuthNone = "none"
	// AuthRelay offers AUTH PLAIN and LOGIN and checks the credentials by
	// authenticating to the back-end with them.
	AuthRelay = "relay"
)

// Config holds the SMTP options of one listener (the "smtp:" key). Every
// default is applied by SetDefaults and documented on its field; a
// Frontend applies them itself too, so the zero Config works.
type Config struct {
	// Mode is "relay" or "passthrough". Empty means relay.
	Mode string `yaml:"mode"`
	// Hostname names gatehouse in its greeting, its EHLO reply and the
	// Received header. Empty means the machine's host name.
	Hostname string `yaml:"hostname"`
	// Auth is "none" or "relay" (relay mode only: AUTH PLAIN and LOGIN at
	// the edge, verified by the back-end). Empty means none.
	Auth string `yaml:"auth"`
	// RequireAuth answers MAIL with 530 5.7.0 until the client has
	// authenticated, as a submission port (587, 465) should. False lets
	// anyone send and leaves the decision to the back-end.
	RequireAuth bool `yaml:"require_auth"`
	// XClient sends Postfix's XCLIENT command with the client's address
	// and port to each back-end before the client is greeted (relay mode
	// only). It fails closed: a back-end that does not offer XCLIENT to
	// gatehouse (smtpd_authorized_xclient_hosts) or refuses it is skipped
	// for the next, and with none left the client gets 421 4.3.2. False
	// never sends it.
	XClient bool `yaml:"xclient"`
	// SourceAddress is the local IP address back-end connections of this
	// listener are dialed from. Give passthrough listeners an address of
	// their own, so that back-ends can trust only the relay listeners'
	// address for XCLIENT. Empty lets the system choose.
	SourceAddress string `yaml:"source_address"`
	// ReceivedHeader prepends a Received: trace header naming the client's
	// address and the TLS it spoke at the edge to every message (relay
	// mode), for back-ends such as Exchange that take neither XCLIENT nor
	// PROXY. False adds none.
	ReceivedHeader bool `yaml:"received_header"`
	// MaxMessageBytes caps the message size; it is advertised in SIZE and
	// a larger message gets 552 5.3.4. 0 means the smallest limit the
	// back-ends advertise, and no limit if none advertises one.
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	// MaxRecipients caps the recipients of one message (452 4.5.3 beyond).
	// 0 means 1000.
	MaxRecipients int `yaml:"max_recipients"`
	// MaxLineLength caps a command or message line in bytes, CRLF included;
	// a longer one gets 500 and the session ends. 0 means 2000; at least
	// 512 (RFC 5321 section 4.5.3.1.4).
	MaxLineLength int `yaml:"max_line_length"`
	// MaxErrors ends a session with 421 once it has received this many
	// error replies (a dictionary attack on RCPT, say). 0 means 20.
	// Malformed commands are counted apart: the fourth ends the session.
	MaxErrors int `yaml:"max_errors"`
	// CommandTimeout is how long gatehouse waits for the client's next
	// command. 0 means 5 minutes (RFC 5321 section 4.5.3.2.7).
	CommandTimeout time.Duration `yaml:"command_timeout"`
	// DataTimeout is how long gatehouse waits for each block of message
	// data. 0 means 3 minutes (RFC 5321 section 4.5.3.2.5).
	DataTimeout time.Duration `yaml:"data_timeout"`
	// BackendGreetingTimeout bounds how long a back-end that accepted the
	// connection may take to greet; one that takes longer is skipped for
	// the next and suspected (taken out until its health check passes
	// again). 0 means 5 seconds.
	BackendGreetingTimeout time.Duration `yaml:"backend_greeting_timeout"`
	// HelloTimeout is how long a client has, from gatehouse's greeting,
	// to send its first HELO or EHLO; a client that has not is told 421
	// and the connection closes, so an idle connection cannot hold a
	// back-end's session for long. 0 means 1 minute.
	HelloTimeout time.Duration `yaml:"hello_timeout"`
	// BackendSetupTimeout bounds a back-end's greeting, STARTTLS and
	// XCLIENT before the client is greeted; a back-end that takes longer
	// is skipped for the next. 0 means 30 seconds.
	BackendSetupTimeout time.Duration `yaml:"backend_setup_timeout"`
	// BackendCommandTimeout bounds a back-end's reply to EHLO, AUTH, MAIL,
	// RCPT and DATA. 0 means 5 minutes (RFC 5321 section 4.5.3.2).
	BackendCommandTimeout time.Duration `yaml:"backend_command_timeout"`
	// BackendDataTimeout bounds the back-end's reply to the end of a
	// message. 0 means 9 minutes: under the 10 minutes a client waits
	// (RFC 5321 section 4.5.3.2.6), so it gets a clean 421 rather than a
	// timeout of its own.
	BackendDataTimeout time.Duration `yaml:"backend_data_timeout"`
}

// SetDefaults fills in every zero field with its documented default.
func (c *Config) SetDefaults() {
	if c.Mode == "" {
		c.Mode = ModeRelay
	}
	if c.Auth == "" {
		c.Auth = AuthNone
	}
	if c.Hostname == "" {
		c.Hostname = defaultHostname()
	}
	setDefault(&c.MaxRecipients, 1000)
	setDefault(&c.MaxLineLength, 2000)
	setDefault(&c.MaxErrors, 20)
	setDefault(&c.CommandTimeout, 5*time.Minute)
	setDefault(&c.DataTimeout, 3*time.Minute)
	setDefault(&c.BackendGreetingTimeout, 5*time.Second)
	setDefault(&c.HelloTimeout, time.Minute)
	setDefault(&c.BackendSetupTimeout, 30*time.Second)
	setDefault(&c.BackendCommandTimeout, 5*time.Minute)
	setDefault(&c.BackendDataTimeout, 9*time.Minute)
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

func defaultHostname() string {
	if h, err := os.Hostname(); err == nil && h != "" && validHostname(h) == nil {
		return h
	}
	return "localhost"
}

// Validate reports the first problem in c, naming the YAML key at fault.
func (c *Config) Validate() error {
	if err := c.validateChoices(); err != nil {
		return err
	}
	if c.Hostname != "" {
		if err := validHostname(c.Hostname); err != nil {
			return fmt.Errorf("hostname: %w", err)
		}
	}
	if c.SourceAddress != "" {
		if _, err := netip.ParseAddr(c.SourceAddress); err != nil {
			return fmt.Errorf("source_address %q: want an IP address", c.SourceAddress)
		}
	}
	if c.MaxLineLength != 0 && c.MaxLineLength < 512 {
		return fmt.Errorf("max_line_length: %d is below SMTP's minimum of 512", c.MaxLineLength)
	}
	return c.validateSigns()
}

func (c *Config) validateChoices() error {
	switch c.Mode {
	case "", ModeRelay, ModePassthrough:
	default:
		return fmt.Errorf("mode %q: want relay or passthrough", c.Mode)
	}
	switch c.Auth {
	case "", AuthNone, AuthRelay:
	default:
		return fmt.Errorf("auth %q: want none or relay", c.Auth)
	}
	if c.Mode != ModePassthrough {
		if c.RequireAuth && c.Auth != AuthRelay {
			return errors.New("require_auth: needs auth: relay, or no client could ever send")
		}
		return nil
	}
	switch {
	case c.Auth == AuthRelay:
		return errors.New("auth: relay works in mode relay only; passthrough hands AUTH to the back-end untouched")
	case c.RequireAuth:
		return errors.New("require_auth: works in mode relay only")
	case c.ReceivedHeader:
		return errors.New("received_header: works in mode relay only; passthrough never sees the message")
	case c.XClient:
		return errors.New("xclient: works in mode relay only; passthrough cannot keep a client's own XCLIENT from the back-end once it splices, so it must never share the address a back-end trusts for XCLIENT")
	}
	return nil
}

func (c *Config) validateSigns() error {
	for _, n := range []struct {
		key string
		v   int64
	}{
		{"max_message_bytes", c.MaxMessageBytes},
		{"max_recipients", int64(c.MaxRecipients)},
		{"max_errors", int64(c.MaxErrors)},
		{"command_timeout", int64(c.CommandTimeout)},
		{"data_timeout", int64(c.DataTimeout)},
		{"backend_greeting_timeout", int64(c.BackendGreetingTimeout)},
		{"hello_timeout", int64(c.HelloTimeout)},
		{"backend_setup_timeout", int64(c.BackendSetupTimeout)},
		{"backend_command_timeout", int64(c.BackendCommandTimeout)},
		{"backend_data_timeout", int64(c.BackendDataTimeout)},
	} {
		if n.v < 0 {
			return fmt.Errorf("%s: must not be negative", n.key)
		}
	}
	return nil
}

// validHostname accepts what may follow "220 " and "250 " and appear in a
// Received header: printable ASCII without spaces, at most 255 bytes.
func validHostname(h string) error {
	if len(h) > 255 {
		return fmt.Errorf("%q is longer than 255 bytes", h)
	}
	if strings.IndexFunc(h, func(r rune) bool { return r <= ' ' || r > '~' || r == '(' || r == ')' }) >= 0 {
		return fmt.Errorf("%q must be printable ASCII without spaces or parentheses", h)
	}
	return nil
}
