package pop3

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is the POP3 part of a listener (YAML key "pop3").
type Config struct {
	// Forward tells the back-end the client's address inside the
	// protocol: "xclient" sends Dovecot's XCLIENT ADDR/PORT (the back-end
	// must list gatehouse in login_trusted_networks); "" or "none" sends
	// nothing (a PROXY header, configured on the listener, also works).
	Forward string `yaml:"forward"`
	// BackendLogin is how gatehouse logs in to the back-end: "user"
	// (USER/PASS, RFC 1939) or "plain" (AUTH PLAIN, RFC 5034); "" means user.
	BackendLogin string `yaml:"backend_login"`
	// Capabilities are the CAPA lines listed for the state after login
	// (RFC 2449 lets a server list them before); empty means TOP, UIDL,
	// RESP-CODES, AUTH-RESP-CODE and PIPELINING.
	Capabilities []string `yaml:"capabilities"`
	// Greeting is the text after "+OK " in the greeting; "" means
	// "POP3 ready".
	Greeting string `yaml:"greeting"`
	// PreauthTimeout bounds the whole conversation before login (and a
	// TLS handshake); 0 means 60s.
	PreauthTimeout time.Duration `yaml:"preauth_timeout"`
	// LoginTimeout bounds the back-end's greeting, TLS and login; 0 means
	// 30s.
	LoginTimeout time.Duration `yaml:"login_timeout"`
	// MaxCommands is how many commands a client may send before login; 0
	// means 20.
	MaxCommands int `yaml:"max_commands"`
	// MaxLine is the longest command line accepted before login, CRLF
	// included; 0 means 1024 (RFC 2449 allows 255 plus SASL responses).
	MaxLine int `yaml:"max_line"`
}

// Forwarding modes and back-end login methods.
const (
	ForwardNone    = "none"
	ForwardXClient = "xclient"
	LoginUser      = "user"
	LoginPlain     = "plain"
)

// SetDefaults fills the zero values documented on each field.
func (c *Config) SetDefaults() {
	if c.Forward == "" {
		c.Forward = ForwardNone
	}
	if c.BackendLogin == "" {
		c.BackendLogin = LoginUser
	}
	if len(c.Capabilities) == 0 {
		c.Capabilities = []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"}
	}
	if c.Greeting == "" {
		c.Greeting = "POP3 ready"
	}
	if c.PreauthTimeout == 0 {
		c.PreauthTimeout = 60 * time.Second
	}
	if c.LoginTimeout == 0 {
		c.LoginTimeout = 30 * time.Second
	}
	if c.MaxCommands == 0 {
		c.MaxCommands = 20
	}
	if c.MaxLine == 0 {
		c.MaxLine = 1024
	}
}

// Validate reports the first inconsistent setting.
func (c *Config) Validate() error {
	switch c.Forward {
	case "", ForwardNone, ForwardXClient:
	default:
		return fmt.Errorf("pop3: unknown forward %q (want none or xclient)", c.Forward)
	}
	switch c.BackendLogin {
	case "", LoginUser, LoginPlain:
	default:
		return fmt.Errorf("pop3: unknown backend_login %q (want user or plain)", c.BackendLogin)
	}
	if c.PreauthTimeout < 0 || c.LoginTimeout < 0 || c.MaxCommands < 0 {
		return errors.New("pop3: timeouts and max_commands must not be negative")
	}
	if c.MaxLine != 0 && c.MaxLine < 64 {
		return fmt.Errorf("pop3: max_line %d is below 64", c.MaxLine)
	}
	for _, l := range c.Capabilities {
		if strings.ContainsAny(l, "\r\n") || l == "" {
			return fmt.Errorf("pop3: capability %q is not one line", l)
		}
	}
	if strings.ContainsAny(c.Greeting, "\r\n") {
		return errors.New("pop3: greeting must be one line")
	}
	return nil
}
