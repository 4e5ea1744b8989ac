package health

import (
	"context"
	stdtls "crypto/tls"
	"net"
)

// TCP is the connect-only probe: healthy when the back-end accepts a TCP
// connection. It proves a listener, not a working service.
type TCP struct {
	// Dial opens the connection; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Probe connects to addr and closes the connection at once.
func (p *TCP) Probe(ctx context.Context, addr string) error {
	a, err := begin(ctx, "tcp", p.Dial, addr)
	if err != nil {
		return err
	}
	a.end()
	return nil
}

// TLS is the handshake probe: healthy when the back-end completes a TLS
// handshake (and, unless Config says otherwise, presents a certificate valid
// for the host in the address).
type TLS struct {
	// Config is the client TLS configuration; nil verifies the server
	// against the system roots, naming the host in the address.
	Config *stdtls.Config
	// Dial opens the TCP connection; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Probe connects to addr, completes a TLS handshake and closes with a
// close_notify.
func (p *TLS) Probe(ctx context.Context, addr string) error {
	a, err := begin(ctx, "tls", p.Dial, addr)
	if err != nil {
		return err
	}
	defer a.end()
	_, err = a.handshake(p.Config, "")
	return err
}
