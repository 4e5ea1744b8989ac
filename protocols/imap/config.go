package imap

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is the IMAP part of a listener (YAML key "imap").
type Config struct {
	// Forward tells the back-end the client's address inside the
	// protocol: "id" sends Dovecot's ID with x-originating-ip and
	// x-originating-port before LOGIN (the back-end must list gatehouse in
	// login_trusted_networks); "" or "none" sends nothing (a PROXY header,
	// configured on the listener, also works).
	Forward string `yaml:"forward"`
	// Capabilities are listed in the greeting and CAPABILITY before login,
	// besides STARTTLS, LOGINDISABLED and AUTH=, which gatehouse adds as
	// the connection allows; empty means IMAP4rev1 SASL-IR LITERAL+ ID.
	Capabilities []string `yaml:"capabilities"`
	// Greeting is the text of the greeting after its capability code; ""
	// means "IMAP ready".
	Greeting string `yaml:"greeting"`
	// PreauthTimeout bounds the whole conversation before login (and a
	// TLS handshake); 0 means 60s.
	PreauthTimeout time.Duration `yaml:"preauth_timeout"`
	// LoginTimeout bounds the back-end's greeting, TLS, ID and login; 0
	// means 30s.
	LoginTimeout time.Duration `yaml:"login_timeout"`
	// MaxCommands is how many commands a client may send before login; 0
	// means 20.
	MaxCommands int `yaml:"max_commands"`
	// MaxLine is the longest command line accepted before login, CRLF
	// included and literals excluded; 0 means 2048.
	MaxLine int `yaml:"max_line"`
	// MaxLiteral is the largest literal accepted before login (a user
	// name or password); 0 means 4096.
	MaxLiteral int `yaml:"max_literal"`
}

// Forwarding modes.
const (
	ForwardNone = "none"
	ForwardID   = "id"
)

// SetDefaults fills the zero values documented on each field.
func (c *Config) SetDefaults() {
	if c.Forward == "" {
		c.Forward = ForwardNone
	}
	if len(c.Capabilities) == 0 {
		c.Capabilities = []string{"IMAP4rev1", "SASL-IR", "LITERAL+", "ID"}
	}
	if c.Greeting == "" {
		c.Greeting = "IMAP ready"
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
		c.MaxLine = 2048
	}
	if c.MaxLiteral == 0 {
		c.MaxLiteral = 4096
	}
}

// Validate reports the first inconsistent setting.
func (c *Config) Validate() error {
	switch c.Forward {
	case "", ForwardNone, ForwardID:
	default:
		return fmt.Errorf("imap: unknown forward %q (want none or id)", c.Forward)
	}
	if c.PreauthTimeout < 0 || c.LoginTimeout < 0 || c.MaxCommands < 0 || c.MaxLiteral < 0 {
		return errors.New("imap: timeouts and limits must not be negative")
	}
	if c.MaxLine != 0 && c.MaxLine < 64 {
		return fmt.Errorf("imap: max_line %d is below 64", c.MaxLine)
	}
	for _, cap := range c.Capabilities {
		if cap == "" || strings.ContainsAny(cap, " \r\n[]") {
			return fmt.Errorf("imap: capability %q is not one atom", cap)
		}
	}
	if strings.ContainsAny(c.Greeting, "\r\n") {
		return errors.New("imap: greeting must be one line")
	}
	return nil
}
