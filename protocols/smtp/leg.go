package smtp

import (
	"bufio"
	"bytes"
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/gatehouse-proxy/gatehouse/proxy"
	"github.com/gatehouse-proxy/gatehouse/tls"
)

// leg is gatehouse's SMTP conversation with one back-end on behalf of one
// client. Until a HELO name is known it is driven by hand (greeting,
// STARTTLS, XCLIENT); then relay mode hands it to go-smtp's client and
// passthrough mode to Splice.
type leg struct {
	f        *Frontend
	b        *proxy.Backend
	raw      net.Conn      // as dialed; closing it ends the leg
	conn     net.Conn      // raw, or TLS over it
	br       *bufio.Reader // reads conn while gatehouse drives it by hand
	greeting reply         // the 220 a fresh go-smtp client is shown
	caps     capabilities  // of gatehouse's own EHLO (XClient only), else nil
	tls      bool          // the leg is encrypted
	client   *gosmtp.Client
	replay   *replayConn // what client reads through
	broken   bool        // a transport failure happened: only closing is left
	spliced  bool        // the conversation is the client's now: no QUIT from us
}

// stageError is a back-end failure before the client was served: the
// next back-end is tried.
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

func failAt(stage string, err error) error { return &stageError{stage: stage, err: err} }

// openLeg dials the back-ends in order and returns the first that greets
// with 220 (and completes STARTTLS and gatehouse's EHLO when those are
// configured) within the setup timeout. A back-end that accepts the TCP
// connection but fails the conversation is skipped like a dead one, so
// the client is greeted only once a back-end is ready.
func (f *Frontend) openLeg(ctx context.Context, order []*proxy.Backend, p peer) (*leg, error) {
	var skipped error
	for {
		raw, b, err := f.Pool.DialOrder(ctx, order)
		if err != nil {
			if skipped != nil {
				err = fmt.Errorf("%w; before that, %w", err, skipped)
			}
			return nil, err
		}
		order = after(order, b)
		if f.cfg.Mode == ModeRelay {
			raw = &meteredConn{Conn: raw} // passthrough keeps the raw socket for splice(2)
		}
		l := &leg{f: f, b: b, raw: raw, conn: raw}
		err = l.setup(ctx, p)
		if err == nil {
			return l, nil
		}
		raw.Close()
		skipped = fmt.Errorf("back-end %s failed at %w", b.Name, err)
		var se *stageError
		if errors.As(err, &se) {
			backendFailures.WithLabelValues(f.Pool.Name, b.Name, se.stage).Inc()
		}
		f.log().Warn("smtp back-end skipped", "listener", f.Pool.Name, "backend", b.Name, "client", p.remote.String(), "err", err)
		f.suspectSilent(ctx, b, err)
	}
}

// suspectSilent hands a back-end that accepted but did not greet in time
// to Suspect: the next client should not wait for it too.
func (f *Frontend) suspectSilent(ctx context.Context, b *proxy.Backend, err error) {
	var se *stageError
	if f.Suspect == nil || ctx.Err() != nil || !errors.As(err, &se) || se.stage != "greeting" ||
		!errors.Is(err, os.ErrDeadlineExceeded) {
		return
	}
	f.log().Warn("smtp back-end suspected: no greeting in time", "listener", f.Pool.Name, "backend", b.Name,
		"timeout", f.cfg.BackendGreetingTimeout)
	f.Suspect(b, fmt.Errorf("no SMTP greeting within %v", f.cfg.BackendGreetingTimeout))
}

// after returns the back-ends that follow b in order.
func after(order []*proxy.Backend, b *proxy.Backend) []*proxy.Backend {
	for i, o := range order {
		if o == b {
			return order[i+1:]
		}
	}
	return nil
}

// setup runs everything that must happen before the client is greeted.
// The greeting (with the PROXY header and implicit TLS before it) must
// come within the greeting timeout, the rest within the setup timeout.
func (l *leg) setup(ctx context.Context, p peer) error {
	cfg := &l.f.cfg
	start := time.Now()
	l.raw.SetDeadline(start.Add(min(cfg.BackendGreetingTimeout, cfg.BackendSetupTimeout)))
	stop := context.AfterFunc(ctx, func() { l.raw.SetDeadline(time.Now()) })
	defer stop()
	if err := l.greet(ctx, p); err != nil {
		return err
	}
	l.raw.SetDeadline(start.Add(cfg.BackendSetupTimeout))
	if l.f.BackendTLSMode == proxy.TLSStartTLS {
		if err := l.startTLS(); err != nil {
			return err
		}
	}
	if cfg.XClient {
		if _, err := l.ehlo(cfg.Hostname); err != nil {
			return failAt("ehlo", err)
		}
		if err := l.sendXClient(p); err != nil {
			return failAt("xclient", err)
		}
	}
	return l.raw.SetDeadline(time.Time{})
}

// greet sends the PROXY header, does implicit TLS and reads the greeting.
func (l *leg) greet(ctx context.Context, p peer) error {
	if l.f.ProxyVersion != 0 {
		if err := proxy.WriteProxyHeader(l.raw, l.f.ProxyVersion, p.remote, p.local); err != nil {
			return failAt("greeting", err)
		}
	}
	if l.f.BackendTLSMode == proxy.TLSImplicit {
		tc := stdtls.Client(l.raw, l.f.backendTLS(l.b))
		if err := tc.HandshakeContext(ctx); err != nil {
			return failAt("starttls", fmt.Errorf("tls handshake: %w", err))
		}
		l.conn, l.tls = tc, true
	}
	l.br = bufio.NewReaderSize(l.conn, maxReplyLine)
	return l.readGreeting()
}

// readGreeting reads the back-end's greeting, which must be 220 (RFC 5321
// section 4.3.1: a 554 or 421 greeting means "go elsewhere").
func (l *leg) readGreeting() error {
	r, err := readReply(l.br)
	if err != nil {
		return failAt("greeting", err)
	}
	if r.Code != 220 {
		return failAt("greeting", fmt.Errorf("greeted with %s", r))
	}
	l.greeting = r
	return nil
}

// command sends one command line and reads its reply.
func (l *leg) command(line string) (reply, error) {
	if _, err := io.WriteString(l.conn, line+"\r\n"); err != nil {
		return reply{}, err
	}
	return readReply(l.br)
}

// ehlo says EHLO as name and learns the capabilities.
func (l *leg) ehlo(name string) (reply, error) {
	r, err := l.command("EHLO " + name)
	if err != nil {
		return r, err
	}
	if r.Code != 250 {
		return r, fmt.Errorf("EHLO answered %s", r)
	}
	l.caps = parseEHLO(r)
	l.f.caps.learn(l.b.Name, l.caps)
	return r, nil
}

// startTLS upgrades the leg (RFC 3207). A back-end that does not offer
// STARTTLS, refuses it, or sends anything after its 220 is given up: no
// silent downgrade, and no response injection (CVE-2011-0411).
func (l *leg) startTLS() error {
	if _, err := l.ehlo(l.f.cfg.Hostname); err != nil {
		return failAt("ehlo", err)
	}
	if !l.caps.has("STARTTLS") {
		return failAt("starttls", errors.New("STARTTLS not offered"))
	}
	r, err := l.command("STARTTLS")
	if err == nil && r.Code != 220 {
		err = fmt.Errorf("STARTTLS answered %s", r)
	}
	if err != nil {
		return failAt("starttls", err)
	}
	tc, discarded, err := tls.ClientStartTLS(l.conn, l.br, l.f.backendTLS(l.b))
	if err == nil && discarded > 0 {
		err = fmt.Errorf("%d bytes sent after the STARTTLS go-ahead", discarded)
	}
	if err != nil {
		return failAt("starttls", err)
	}
	// RFC 3207 section 4.2: forget what was learned before TLS.
	l.conn, l.tls, l.caps = tc, true, nil
	l.br = bufio.NewReaderSize(l.conn, maxReplyLine)
	return nil
}

// sendXClient tells the back-end who the client is (Postfix XCLIENT),
// before the client is greeted. XCLIENT resets the back-end to the
// greeting stage and answers 220, which becomes the greeting the client
// library is shown; the client's own EHLO then names it. It fails closed:
// a back-end that does not offer XCLIENT to gatehouse, or refuses it,
// would see gatehouse's address as the client's, which a back-end that
// trusts gatehouse (mynetworks) takes for a relay permit.
func (l *leg) sendXClient(p peer) error {
	if !l.caps.has("XCLIENT") {
		return errors.New("XCLIENT not offered to gatehouse (see smtpd_authorized_xclient_hosts)")
	}
	r, err := l.command(xclientCommand(l.caps["XCLIENT"], p, ""))
	if err != nil {
		return err
	}
	if r.Code != 220 {
		return fmt.Errorf("XCLIENT refused: %s", r)
	}
	l.greeting = r
	return nil
}

// hello hands the leg to a new go-smtp client and says EHLO as the
// client's HELO name. It is called at every HELO/EHLO of the client that
// starts a go-smtp session (the first, and the first after STARTTLS): a
// new EHLO resets the back-end as RFC 5321 section 4.1.4 says.
func (l *leg) hello(name string) (capabilities, error) {
	if n := l.br.Buffered(); n > 0 {
		return nil, fmt.Errorf("back-end sent %d bytes nobody asked for", n)
	}
	l.replay = &replayConn{Conn: l.conn, pending: l.greeting.wire()}
	c := gosmtp.NewClient(l.replay)
	c.CommandTimeout = l.f.cfg.BackendCommandTimeout
	c.SubmissionTimeout = l.f.cfg.BackendDataTimeout
	if err := c.Hello(name); err != nil {
		return nil, err
	}
	l.client = c
	caps := clientCaps(c)
	l.f.caps.learn(l.b.Name, caps)
	return caps, nil
}

// capture starts recording what the back-end sends, for captured.
func (l *leg) capture() {
	if l.replay != nil {
		l.replay.rec, l.replay.recording = l.replay.rec[:0], true
	}
}

// captured returns the reply recorded since capture: go-smtp's client
// reads a reply whole and nothing more (the back-end sends nothing
// unasked), so the bytes it read are exactly the reply.
func (l *leg) captured() (reply, bool) {
	if l.replay == nil || !l.replay.recording {
		return reply{}, false
	}
	l.replay.recording = false
	br := captureReaders.Get().(*bufio.Reader)
	defer captureReaders.Put(br)
	br.Reset(bytes.NewReader(l.replay.rec))
	r, err := readReply(br)
	return r, err == nil
}

// captureReaders parse captured replies; each holds a reply line.
var captureReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, maxReplyLine) }}

// clientCaps reads back the extensions of go-smtp's EHLO that gatehouse
// uses.
func clientCaps(c *gosmtp.Client) capabilities {
	caps := capabilities{}
	for _, kw := range []string{"SIZE", "SMTPUTF8", "DSN", "AUTH", "8BITMIME", "PIPELINING", "CHUNKING", "STARTTLS"} {
		if ok, params := c.Extension(kw); ok {
			caps[kw] = params
		}
	}
	return caps
}

// close ends the leg politely: QUIT, a short wait for 221, then close.
// A broken leg is closed at once.
func (l *leg) close() {
	if !l.broken && !l.spliced {
		l.raw.SetDeadline(time.Now().Add(2 * time.Second))
		if l.client != nil {
			l.client.Quit()
		} else if l.br != nil {
			l.command("QUIT")
		}
	}
	l.raw.Close()
	if m, ok := l.raw.(*meteredConn); ok {
		proxy.CountBytes(l.f.Pool.Name, l.b.Name, m.written.Load(), m.read.Load())
	}
}

// meteredConn counts the bytes of a relayed back-end connection, for the
// engine's byte counters.
type meteredConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *meteredConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *meteredConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// abort closes the leg at once; safe from any goroutine.
func (l *leg) abort() { l.raw.Close() }

// backendTLS returns the client TLS config for b, naming b's host for
// verification when the shared config names none.
func (f *Frontend) backendTLS(b *proxy.Backend) *stdtls.Config {
	cfg := f.BackendTLS
	if cfg == nil {
		cfg = &stdtls.Config{MinVersion: stdtls.VersionTLS12}
	}
	if cfg.ServerName != "" || cfg.InsecureSkipVerify {
		return cfg
	}
	cfg = cfg.Clone()
	if host, _, err := net.SplitHostPort(b.Addr); err == nil {
		cfg.ServerName = host
	}
	return cfg
}
