package health

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"net"
	"strings"
)

// POP3 checks a POP3 server (RFC 1939): a "+OK" banner, optionally CAPA,
// optionally STLS (RFC 2595) and the TLS handshake, then QUIT answered
// "+OK". After a failed step QUIT is still sent if the server listens.
type POP3 struct {
	// Capa sends CAPA after the banner, and again inside TLS after STLS. A
	// server that answers CAPA with -ERR passes, since CAPA is optional
	// (RFC 2449); one that lists capabilities without STLS fails StartTLS.
	Capa bool
	// StartTLS upgrades with STLS before QUIT.
	StartTLS bool
	// ImplicitTLS speaks TLS from the first byte (pop3s, port 995).
	ImplicitTLS bool
	// TLSConfig is the client TLS configuration; nil verifies the server
	// against the system roots, naming the host in the address.
	TLSConfig *stdtls.Config
	// Dial opens the TCP connection; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Probe runs the POP3 conversation against addr.
func (p *POP3) Probe(ctx context.Context, addr string) error {
	a, err := begin(ctx, "pop3", p.Dial, addr)
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
	d := newDialogue(a, conn)
	if err := p.converse(d); err != nil {
		d.farewell(err, "QUIT", func(string) bool { return true })
		return err
	}
	reply, err := d.ask("QUIT")
	if err != nil {
		return err
	}
	if !popOK(reply) {
		return d.unwanted("QUIT", "QUIT answered", reply)
	}
	return nil
}

// converse runs everything before QUIT.
func (p *POP3) converse(d *dialogue) error {
	banner, err := d.line()
	if err != nil {
		return d.broke("banner", err)
	}
	if !popOK(banner) {
		return d.unwanted("banner", "banner was", banner)
	}
	caps, err := p.capa(d)
	if err != nil || !p.StartTLS {
		return err
	}
	if caps != nil && !caps["STLS"] {
		return d.fail(StageProtocol, "CAPA", errors.New("CAPA does not list STLS"))
	}
	reply, err := d.ask("STLS")
	if err != nil {
		return err
	}
	if !popOK(reply) {
		return d.unwanted("STLS", "STLS answered", reply)
	}
	if err := d.upgrade("STLS", p.TLSConfig); err != nil {
		return err
	}
	_, err = p.capa(d)
	return err
}

// capa sends CAPA if asked to and returns the capability names listed, or
// nil when CAPA was not sent or the server does not support it.
func (p *POP3) capa(d *dialogue) (map[string]bool, error) {
	if !p.Capa {
		return nil, nil
	}
	reply, err := d.ask("CAPA")
	switch {
	case err != nil:
		return nil, err
	case strings.HasPrefix(reply, "-ERR"):
		return nil, nil
	case !popOK(reply):
		return nil, d.unwanted("CAPA", "CAPA answered", reply)
	}
	caps := make(map[string]bool)
	for range maxLines {
		line, err := d.line()
		if err != nil {
			return nil, d.broke("CAPA", err)
		}
		if line == "." {
			return caps, nil
		}
		if name, _, _ := strings.Cut(line, " "); name != "" {
			caps[strings.ToUpper(name)] = true
		}
	}
	return nil, d.fail(StageProtocol, "CAPA", errors.New("CAPA list does not end"))
}

// popOK reports whether a POP3 reply is positive ("+OK", RFC 1939 section 3).
func popOK(reply string) bool { return reply == "+OK" || strings.HasPrefix(reply, "+OK ") }
