package tls

import (
	"bufio"
	stdtls "crypto/tls"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// mailResult is what the fake mail server did with one session.
type mailResult struct {
	discarded int      // bytes ServerStartTLS threw away
	executed  []string // commands answered, in order
	err       error    // upgrade failure, if any
}

// fakeMailServer speaks a line protocol the way a gatehouse frontend does:
// greeting, then one reply per command; on STARTTLS/STLS it sends goAhead
// and upgrades with ServerStartTLS, then reads commands inside TLS with a
// new reader. It serves one session and reports it.
func fakeMailServer(t *testing.T, cfg *stdtls.Config, greeting, goAhead string) (string, <-chan mailResult) {
	ln := listen(t)
	done := make(chan mailResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- mailResult{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(ioTimeout))
		done <- serveMail(c, cfg, greeting, goAhead)
	}()
	return ln.Addr().String(), done
}

func serveMail(c net.Conn, cfg *stdtls.Config, greeting, goAhead string) (res mailResult) {
	r, w := bufio.NewReader(c), io.Writer(c)
	io.WriteString(w, greeting+"\r\n")
	upgraded := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return res
		}
		cmd := strings.TrimRight(line, "\r\n")
		fields := strings.Fields(cmd)
		if len(fields) == 0 {
			continue
		}
		verb := strings.ToUpper(fields[len(fields)-1])
		if !upgraded && (verb == "STARTTLS" || verb == "STLS") {
			io.WriteString(w, goAhead+"\r\n")
			tc, n, err := ServerStartTLS(c, r, cfg)
			res.discarded, res.err = n, err
			if err != nil {
				return res
			}
			r, w, upgraded = bufio.NewReader(tc), tc, true
			continue
		}
		res.executed = append(res.executed, cmd)
		io.WriteString(w, "ok "+cmd+"\r\n")
		if verb == "QUIT" || verb == "LOGOUT" {
			return res
		}
	}
}

// A client pipelines a command behind STARTTLS in the same write (the
// CVE-2011-0411 probe). The server must answer only STARTTLS, discard the
// tail, and inside TLS run nothing until the client speaks again.
func TestStartTLSInjectionDiscarded(t *testing.T) {
	m := newTestManager(t, Certificates{Storage: t.TempDir()})
	for _, tc := range []struct {
		proto, greeting, goAhead string
		injected, tail           string // one write: STARTTLS line + tail
		inside                   string // first command inside TLS
	}{
		{"smtp", "220 mx.example.test ESMTP", "220 2.0.0 Ready to start TLS", "STARTTLS\r\n", "NOOP\r\n", "QUIT"},
		{"pop3", "+OK POP3 ready", "+OK Begin TLS negotiation", "STLS\r\n", "STAT\r\n", "QUIT"},
		{"imap", "* OK IMAP4rev1 ready", "a OK Begin TLS negotiation now", "a STARTTLS\r\n", "b NOOP\r\n", "c LOGOUT"},
	} {
		t.Run(tc.proto, func(t *testing.T) {
			addr, done := fakeMailServer(t, m.ServerConfig(), tc.greeting, tc.goAhead)
			c, r := dialPlain(t, addr)
			expectLine(t, r, tc.greeting)
			io.WriteString(c, tc.injected+tc.tail) // one segment
			expectLine(t, r, tc.goAhead)
			if r.Buffered() != 0 {
				t.Fatalf("server answered the injected command before TLS: %d bytes", r.Buffered())
			}
			tc2 := stdtls.Client(c, &stdtls.Config{InsecureSkipVerify: true})
			io.WriteString(tc2, tc.inside+"\r\n")
			// The first reply inside TLS answers our command, not the injected one.
			expectLine(t, bufio.NewReader(tc2), "ok "+tc.inside)

			res := <-done
			if res.err != nil {
				t.Fatal(res.err)
			}
			if res.discarded != len(tc.tail) {
				t.Errorf("discarded %d bytes, want %d", res.discarded, len(tc.tail))
			}
			if !slices.Equal(res.executed, []string{tc.inside}) {
				t.Errorf("executed %q, want only %q", res.executed, tc.inside)
			}
		})
	}
}

// Plaintext sent after the go-ahead reaches the server's socket, not its
// buffer: it becomes part of the handshake, which fails; nothing runs.
func TestStartTLSPlaintextAfterGoAheadFailsHandshake(t *testing.T) {
	m := newTestManager(t, Certificates{Storage: t.TempDir()})
	addr, done := fakeMailServer(t, m.ServerConfig(), "220 mx ESMTP", "220 Ready to start TLS")
	c, r := dialPlain(t, addr)
	expectLine(t, r, "220 mx ESMTP")
	io.WriteString(c, "STARTTLS\r\n")
	expectLine(t, r, "220 Ready to start TLS")
	io.WriteString(c, "MAIL FROM:<a@example.test>\r\n")

	res := <-done
	if res.err == nil {
		t.Fatal("handshake succeeded on plaintext")
	}
	if len(res.executed) != 0 || res.discarded != 0 {
		t.Fatalf("executed %q, discarded %d; want nothing", res.executed, res.discarded)
	}
}

// A back-end that sends more after its go-ahead (response injection): the
// extra bytes are discarded, and the first reply read inside TLS is the
// back-end's real one.
func TestClientStartTLSDiscardsInjectedResponse(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	backendCert := ca.issue(t, "backend.example.test")
	ln := listen(t)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(ioTimeout))
		r := bufio.NewReader(c)
		io.WriteString(c, "220 backend ESMTP\r\n")
		if line, _ := r.ReadString('\n'); line != "STARTTLS\r\n" {
			return
		}
		io.WriteString(c, "220 go ahead\r\n250-injected\r\n") // one segment
		tc := stdtls.Server(c, &stdtls.Config{Certificates: []stdtls.Certificate{backendCert}})
		io.WriteString(tc, "250 inside TLS\r\n")
		io.Copy(io.Discard, tc)
	}()

	c, r := dialPlain(t, ln.Addr().String())
	expectLine(t, r, "220 backend ESMTP")
	io.WriteString(c, "STARTTLS\r\n")
	expectLine(t, r, "220 go ahead")
	tc, discarded, err := ClientStartTLS(c, r, &stdtls.Config{ServerName: "backend.example.test", RootCAs: ca.pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if discarded != len("250-injected\r\n") {
		t.Errorf("discarded %d bytes, want %d", discarded, len("250-injected\r\n"))
	}
	expectLine(t, bufio.NewReader(tc), "250 inside TLS")
}

// dialPlain connects to addr with a deadline and returns the connection and
// a line reader on it.
func dialPlain(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioTimeout))
	return c, bufio.NewReader(c)
}

// expectLine reads one CRLF line from r and compares it with want.
func expectLine(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading %q: %v", want, err)
	}
	if got := strings.TrimRight(line, "\r\n"); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
