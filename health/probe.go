package health

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Probe checks the back-end at addr ("host:port") the way a real client
// would. A nil error means healthy. The context carries the probe's timeout:
// a back-end that accepts and then stays silent fails when it expires.
type Probe interface {
	Probe(ctx context.Context, addr string) error
}

// ProbeFunc adapts an ordinary function to the [Probe] interface.
type ProbeFunc func(ctx context.Context, addr string) error

// Probe calls f(ctx, addr).
func (f ProbeFunc) Probe(ctx context.Context, addr string) error { return f(ctx, addr) }

// Stages of a probe, as found in [Error.Stage].
const (
	StageConnect  = "connect"  // the TCP connection could not be made
	StageTLS      = "tls"      // the TLS handshake failed
	StageProtocol = "protocol" // a mail server answered wrongly or hung up
	StageHTTP     = "http"     // an HTTP exchange failed or answered wrongly
	StageTimeout  = "timeout"  // the probe's context ended first
)

// Error is a failed probe: the stage that failed and why. Probes return it
// wrapped with the probe's kind, so the text reads like
// "smtp: protocol: EHLO answered 421 4.3.2 shutting down"; use [errors.As]
// to get at it. A timeout unwraps to [context.DeadlineExceeded] (or to
// [context.Canceled] when the probe was stopped).
type Error struct {
	Stage string // one of the Stage constants
	Err   error  // what went wrong
}

// Error returns the stage and the cause, as in "tls: x509: ...".
func (e *Error) Error() string { return e.Stage + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Kinds lists the probe kinds that [New] builds, as written in configuration.
var Kinds = []string{"tcp", "tls", "smtp", "pop3", "imap", "http", "https"}

// Options configures a probe built by [New]. A field that does not apply to
// the chosen kind must be left at its zero value, except TLSConfig and Dial,
// which are used only where they apply.
type Options struct {
	// StartTLS upgrades a mail conversation with STARTTLS (SMTP, IMAP) or
	// STLS (POP3) before it ends. Mail kinds only.
	StartTLS bool
	// ImplicitTLS speaks TLS from the first byte (smtps, pop3s, imaps).
	// Mail kinds, and "http" where it means the same as "https".
	ImplicitTLS bool
	// TLSConfig is the client TLS configuration; nil verifies the server
	// against the system roots for the host in the address.
	TLSConfig *stdtls.Config
	// HELO is the name the SMTP probe gives in EHLO; empty means "localhost".
	HELO string
	// Path is the HTTP request path; empty means "/".
	Path string
	// Host is the HTTP Host header (and the TLS server name when TLSConfig
	// names none); empty means the probed address.
	Host string
	// ExpectStatus is the HTTP status that means healthy; 0 means 200.
	ExpectStatus int
	// ExpectBody is a substring the HTTP body must contain; empty means any.
	ExpectBody string
	// Dial opens the TCP connection; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// New builds the probe of the named kind, one of [Kinds]. It refuses an
// unknown kind and options that make no sense for the kind. A "pop3" probe
// sends CAPA; "https" is "http" over implicit TLS.
func New(kind string, o Options) (Probe, error) {
	p := build(kind, o)
	if p == nil {
		return nil, fmt.Errorf("health: unknown probe kind %q (valid: %s)", kind, strings.Join(Kinds, ", "))
	}
	if err := o.check(kind); err != nil {
		return nil, fmt.Errorf("health: %s probe: %w", kind, err)
	}
	return p, nil
}

// build is the one switch over probe kinds; nil means an unknown kind.
func build(kind string, o Options) Probe {
	switch kind {
	case "tcp":
		return &TCP{Dial: o.Dial}
	case "tls":
		return &TLS{Config: o.TLSConfig, Dial: o.Dial}
	case "smtp":
		return &SMTP{HELO: o.HELO, StartTLS: o.StartTLS, ImplicitTLS: o.ImplicitTLS, TLSConfig: o.TLSConfig, Dial: o.Dial}
	case "pop3":
		return &POP3{Capa: true, StartTLS: o.StartTLS, ImplicitTLS: o.ImplicitTLS, TLSConfig: o.TLSConfig, Dial: o.Dial}
	case "imap":
		return &IMAP{StartTLS: o.StartTLS, ImplicitTLS: o.ImplicitTLS, TLSConfig: o.TLSConfig, Dial: o.Dial}
	case "http", "https":
		return &HTTP{
			Path: o.Path, Host: o.Host, ExpectStatus: o.ExpectStatus, ExpectBody: o.ExpectBody,
			HTTPS: kind == "https" || o.ImplicitTLS, TLSConfig: o.TLSConfig, Dial: o.Dial,
		}
	}
	return nil
}

// check refuses options that the kind would not use, so that a mistyped
// configuration fails at load time instead of probing something else.
func (o Options) check(kind string) error {
	mail := kind == "smtp" || kind == "pop3" || kind == "imap"
	web := kind == "http" || kind == "https"
	switch {
	case o.StartTLS && !mail:
		return errors.New("starttls applies to smtp, pop3 and imap only")
	case o.StartTLS && o.ImplicitTLS:
		return errors.New("starttls and implicit TLS exclude each other")
	case o.ImplicitTLS && kind == "tcp":
		return errors.New("implicit TLS on a tcp probe: use the tls kind")
	case o.HELO != "" && kind != "smtp":
		return errors.New("helo applies to smtp only")
	case o.HELO != "" && !isToken(o.HELO):
		return fmt.Errorf("helo %q is not a single word", o.HELO)
	case !web && (o.Path != "" || o.Host != "" || o.ExpectStatus != 0 || o.ExpectBody != ""):
		return errors.New("path, host, expect status and expect body apply to http and https only")
	case o.Path != "" && !strings.HasPrefix(o.Path, "/"):
		return fmt.Errorf("path %q does not begin with /", o.Path)
	case o.Path != "" && !isToken(o.Path):
		return fmt.Errorf("path %q contains spaces or control characters", o.Path)
	case o.Host != "" && !isToken(o.Host):
		return fmt.Errorf("host %q contains spaces or control characters", o.Host)
	case o.ExpectStatus != 0 && (o.ExpectStatus < 100 || o.ExpectStatus > 599):
		return fmt.Errorf("expected status %d is not an HTTP status", o.ExpectStatus)
	}
	return nil
}

// isToken reports whether s is one printable word: no spaces, no control
// characters, nothing that could end a protocol line early.
func isToken(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return s != ""
}
