//go:build linux

package proxy

import (
	stdtls "crypto/tls"
	"log/slog"
	"time"
)

// TLSMode says when TLS starts on one side of a session.
type TLSMode int

// The TLS modes, towards clients (Link.TLSMode) and towards back-ends
// (Link.BackendTLSMode).
const (
	TLSNone     TLSMode = iota // plaintext
	TLSImplicit                // TLS from the first byte (443, 465, 993, 995; "tls" towards back-ends)
	TLSStartTLS                // plaintext until STARTTLS/STLS (mail protocols only)
)

// ParseTLSMode reads a mode as the configuration spells it: "none" or "",
// "implicit" or "tls", "starttls". The configuration's checker has
// refused anything else; ParseTLSMode reads it as TLSNone.
func ParseTLSMode(s string) TLSMode {
	switch s {
	case "implicit", "tls":
		return TLSImplicit
	case "starttls":
		return TLSStartTLS
	}
	return TLSNone
}

// String returns the mode as the configuration spells it towards clients.
func (m TLSMode) String() string {
	switch m {
	case TLSImplicit:
		return "implicit"
	case TLSStartTLS:
		return "starttls"
	}
	return "none"
}

// Link is what every frontend shares: how it reaches its clients and its
// back-ends. The root package builds one per listener and every frontend
// (proxy.TCP and the protocol packages') embeds it, so an option that
// every frontend needs is a field here and a line in the builder. The
// zero value is plaintext both ways, no PROXY header, no idle limit, no
// throttle and the default logger.
type Link struct {
	// EdgeTLS is the server TLS configuration towards clients; nil means
	// no TLS is offered (TLSMode is then TLSNone).
	EdgeTLS *stdtls.Config
	// TLSMode is when TLS starts towards clients: TLSImplicit (the first
	// byte is the ClientHello) or TLSStartTLS (mail protocols).
	TLSMode TLSMode
	// TLSRequired refuses logins (mail protocols) before STARTTLS/STLS.
	TLSRequired bool
	// BackendTLS is the client TLS configuration towards back-ends;
	// required when BackendTLSMode is not TLSNone. Its ServerName, when
	// empty, is the back-end's host.
	BackendTLS *stdtls.Config
	// BackendTLSMode is when TLS starts towards back-ends.
	BackendTLSMode TLSMode
	// ProxyVersion, 1 or 2, sends a PROXY header with the client's address
	// to the back-end; 0 sends none.
	ProxyVersion byte
	// Idle ends a session with no byte either way for this long; 0 means
	// no limit.
	Idle time.Duration
	// Throttle slows and stops password guessing; nil means no throttle.
	// Every frontend of a process shares one, so a guesser cannot switch
	// protocols to start over.
	Throttle *Throttle
	// Log receives the frontend's lines; nil means slog.Default().
	Log *slog.Logger
}

// Logger returns Log, or slog.Default() when it is nil.
func (l *Link) Logger() *slog.Logger {
	if l.Log != nil {
		return l.Log
	}
	return slog.Default()
}
