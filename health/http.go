package health

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	stdtls "crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
)

// maxBody bounds the part of an HTTP body that is read and searched.
const maxBody = 64 << 10

// HTTP checks a web server with one GET on a connection of its own, closed
// after the reply (no keep-alive). Exchange answers /<vdir>/healthcheck.htm
// with 200 and a body naming the server while the protocol is active, and
// anything else while it is not; redirects are not followed.
type HTTP struct {
	// Path is the request path, with any query; empty means "/".
	Path string
	// Host is the Host header, and the TLS server name when TLSConfig names
	// none; empty means the probed address.
	Host string
	// ExpectStatus is the status that means healthy; 0 means 200.
	ExpectStatus int
	// ExpectBody is a substring the first 64 KiB of the body must contain;
	// empty means any body.
	ExpectBody string
	// HTTPS speaks TLS from the first byte.
	HTTPS bool
	// TLSConfig is the client TLS configuration; nil verifies the server
	// against the system roots.
	TLSConfig *stdtls.Config
	// Dial opens the TCP connection; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Probe sends the GET to addr and judges the reply.
func (p *HTTP) Probe(ctx context.Context, addr string) error {
	scheme := "http"
	if p.HTTPS {
		scheme = "https"
	}
	a, err := begin(ctx, scheme, p.Dial, addr)
	if err != nil {
		return err
	}
	defer a.end()
	var conn net.Conn = a.raw
	if p.HTTPS {
		name := ""
		if p.Host != "" {
			name = hostOf(p.Host)
		}
		if conn, err = a.handshake(p.TLSConfig, name); err != nil {
			return err
		}
	}
	resp, err := p.get(a, conn, scheme)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return p.judge(a, resp)
}

// get writes the request and reads the reply's header.
func (p *HTTP) get(a *attempt, conn net.Conn, scheme string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(a.ctx, http.MethodGet, scheme+"://"+a.addr+cmp.Or(p.Path, "/"), nil)
	if err != nil {
		return nil, a.fail(StageHTTP, "request", fmt.Errorf("building request: %w", err))
	}
	if p.Host != "" {
		req.Host = p.Host
	}
	req.Close = true
	req.Header.Set("User-Agent", "gatehouse-health")
	if err := req.Write(conn); err != nil {
		return nil, a.fail(StageHTTP, "request", fmt.Errorf("sending GET %s: %w", req.URL.RequestURI(), err))
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, a.fail(StageHTTP, "response", fmt.Errorf("reading reply to GET %s: %w", req.URL.RequestURI(), err))
	}
	return resp, nil
}

// judge compares the reply with what healthy looks like.
func (p *HTTP) judge(a *attempt, resp *http.Response) error {
	path := resp.Request.URL.RequestURI()
	if want := cmp.Or(p.ExpectStatus, http.StatusOK); resp.StatusCode != want {
		return a.fail(StageHTTP, "response", fmt.Errorf("GET %s answered %s, want %d", path, clean(resp.Status), want))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return a.fail(StageHTTP, "body", fmt.Errorf("reading body of GET %s: %w", path, err))
	}
	if p.ExpectBody != "" && !bytes.Contains(body, []byte(p.ExpectBody)) {
		return a.fail(StageHTTP, "body", fmt.Errorf("GET %s: body lacks %q", path, p.ExpectBody))
	}
	return nil
}
