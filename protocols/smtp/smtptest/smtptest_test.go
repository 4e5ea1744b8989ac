package smtptest

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"github.com/pires/go-proxyproto"
)

const body = "Subject: hello\r\n\r\nHello from the test.\r\n"

// start runs a configured server for the length of the test.
func start(t *testing.T, configure func(*Server)) *Server {
	t.Helper()
	s := NewUnstartedServer("mx-a")
	if configure != nil {
		configure(s)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// send delivers body from alice to bob with the go-smtp client.
func send(t *testing.T, s *Server, auth sasl.Client) error {
	t.Helper()
	c := client(t, s)
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		return err
	}
	if auth != nil {
		if err := c.Auth(auth); err != nil {
			return err
		}
	}
	return c.SendMail("alice@example.org", []string{"bob@example.net"}, strings.NewReader(body))
}

func TestTranscript(t *testing.T) {
	s := start(t, nil)
	w := rawDial(t, s)
	// The greeting names the back-end, so a person sees who answered.
	w.expect("220 mx-a ESMTP")
	w.Send("EHLO client.example")
	ehlo := w.expect("250 ")
	if ehlo[0] != "250-Hello client.example" || slices.Contains(ehlo, "250-STARTTLS") {
		t.Errorf("EHLO reply %q: want a greeting line and no STARTTLS without TLSConfig", ehlo)
	}
	w.Send("MAIL FROM:<alice@example.org>")
	w.expect("250 ")
	w.Send("RCPT TO:<bob@example.net>", "RCPT TO:<carol@example.net>")
	w.expect("250 ")
	w.expect("250 ")
	w.Send("DATA")
	w.expect("354 ")
	// A line starting with a dot is sent doubled and stored single.
	w.Send("Subject: hi", "", "..leading dot", ".")
	w.expect("250 2.0.0")
	w.Send("QUIT")
	w.expect("221 ")
	w.expectEOF()

	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("Messages() = %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "alice@example.org" || !slices.Equal(m.To, []string{"bob@example.net", "carol@example.net"}) {
		t.Errorf("envelope = %q -> %q", m.From, m.To)
	}
	if string(m.Data) != "Subject: hi\r\n\r\n.leading dot\r\n" {
		t.Errorf("Data = %q", m.Data)
	}
	if m.Helo != "client.example" || m.User != "" || m.TLS {
		t.Errorf("Helo=%q User=%q TLS=%v, want client.example, no user, no TLS", m.Helo, m.User, m.TLS)
	}
	if host, _, _ := net.SplitHostPort(m.RemoteAddr); host != "127.0.0.1" {
		t.Errorf("RemoteAddr = %q, want the loopback client", m.RemoteAddr)
	}
	if got := s.Sessions(); got != 1 {
		t.Errorf("Sessions() = %d, want 1", got)
	}
}

func TestHangNeverGreets(t *testing.T) {
	s := start(t, func(s *Server) { s.Hang = true })
	c := dial(t, s.Addr)
	// The client speaks anyway; the server must still say nothing.
	if _, err := c.Write([]byte("EHLO client.example\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if !isTimeout(err) {
		t.Fatalf("read %q, %v; want a timeout with no greeting", buf[:n], err)
	}
	if got := s.Sessions(); got != 1 {
		t.Errorf("Sessions() = %d, want the hung connection counted", got)
	}
}

func TestEHLOReject(t *testing.T) {
	for _, tc := range []struct {
		code   int
		closes bool // RFC 5321 §3.8: after 421 the server closes
	}{
		{421, true},
		{554, false},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			reject := &gosmtp.SMTPError{Code: tc.code, EnhancedCode: gosmtp.EnhancedCode{tc.code / 100, 3, 2}, Message: "not now"}
			s := start(t, func(s *Server) { s.EHLOReject = reject })
			w := rawDial(t, s)
			w.expect("220 mx-a")
			w.Send("EHLO client.example")
			got := w.expect(fmt.Sprint(tc.code))
			if want := reply(reject); got[0] != want {
				t.Errorf("EHLO reply %q, want %q", got[0], want)
			}
			if tc.closes {
				w.expectEOF()
				return
			}
			w.Send("QUIT")
			w.expect("221 ")
		})
	}
}

// reply formats e as go-smtp writes it.
func reply(e *gosmtp.SMTPError) string {
	c := e.EnhancedCode
	return fmt.Sprintf("%d %d.%d.%d %s", e.Code, c[0], c[1], c[2], e.Message)
}

func TestDataReply(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reply  *gosmtp.SMTPError
		stored bool
	}{
		{"temporary", &gosmtp.SMTPError{Code: 452, EnhancedCode: gosmtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage"}, false},
		{"permanent", &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Rejected by policy"}, false},
		{"accepted with text", &gosmtp.SMTPError{Code: 250, EnhancedCode: gosmtp.EnhancedCode{2, 0, 0}, Message: "queued as 4711"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, func(s *Server) { s.DataReply = tc.reply })
			err := send(t, s, nil)
			var smtpErr *gosmtp.SMTPError
			switch {
			case tc.stored && err != nil:
				t.Fatalf("send: %v, want success", err)
			case !tc.stored && !errors.As(err, &smtpErr):
				t.Fatalf("send: %v, want the %d reply", err, tc.reply.Code)
			case !tc.stored && (smtpErr.Code != tc.reply.Code || smtpErr.EnhancedCode != tc.reply.EnhancedCode):
				t.Fatalf("send: %v, want %d %v", err, tc.reply.Code, tc.reply.EnhancedCode)
			}
			if got := len(s.Messages()); got != map[bool]int{true: 1, false: 0}[tc.stored] {
				t.Errorf("Messages() holds %d, stored=%v", got, tc.stored)
			}
		})
	}
}

func TestDataReply421Closes(t *testing.T) {
	s := start(t, func(s *Server) {
		s.DataReply = &gosmtp.SMTPError{Code: 421, EnhancedCode: gosmtp.EnhancedCode{4, 3, 2}, Message: "shutting down"}
	})
	w := rawDial(t, s)
	w.expect("220 ")
	w.Send("EHLO c", "MAIL FROM:<a@x>", "RCPT TO:<b@y>", "DATA")
	w.expect("250 ")
	w.expect("250 ")
	w.expect("250 ")
	w.expect("354 ")
	w.Send("hi", ".")
	w.expect("421 4.3.2 shutting down")
	w.expectEOF()
}

func TestDropAfterData(t *testing.T) {
	s := start(t, func(s *Server) { s.DropAfterData = true })
	w := rawDial(t, s)
	w.expect("220 ")
	w.Send("EHLO c", "MAIL FROM:<a@x>", "RCPT TO:<b@y>", "DATA")
	w.expect("250 ")
	w.expect("250 ")
	w.expect("250 ")
	w.expect("354 ")
	// The whole message goes in; no reply comes back, only the end of the stream.
	w.Send("Subject: lost", "", "body", ".")
	w.expectEOF()
	if got := len(s.Messages()); got != 0 {
		t.Errorf("Messages() holds %d, want none: the client never heard 250", got)
	}
}

func TestAuthPlain(t *testing.T) {
	s := start(t, func(s *Server) { s.AuthUsers = map[string]string{"alice": "secret"} })

	var smtpErr *gosmtp.SMTPError
	err := send(t, s, sasl.NewPlainClient("", "alice", "wrong"))
	if !errors.As(err, &smtpErr) || smtpErr.Code != 535 {
		t.Fatalf("bad password: %v, want 535", err)
	}
	if err := send(t, s, sasl.NewPlainClient("", "alice", "secret")); err != nil {
		t.Fatalf("good password: %v", err)
	}
	msgs := s.Messages()
	if len(msgs) != 1 || msgs[0].User != "alice" {
		t.Fatalf("Messages() = %+v, want one from user alice", msgs)
	}
}

func TestAuthPlainRawWithoutInitialResponse(t *testing.T) {
	s := start(t, func(s *Server) { s.AuthUsers = map[string]string{"alice": "secret"} })
	w := rawDial(t, s)
	w.expect("220 ")
	w.Send("EHLO c")
	if ehlo := w.expect("250 "); !slices.Contains(ehlo, "250-AUTH PLAIN") {
		t.Fatalf("EHLO %q does not offer AUTH PLAIN", ehlo)
	}
	w.Send("AUTH PLAIN")
	// An empty challenge: the client sends "\x00alice\x00secret" now.
	w.expect("334 ")
	w.Send("AGFsaWNlAHNlY3JldA==")
	w.expect("235 2.0.0")
}

func TestSTARTTLS(t *testing.T) {
	serverTLS, clientTLS := wiretest.ServerTLS(), wiretest.ClientTLS()
	s := start(t, func(s *Server) {
		s.TLSConfig = serverTLS
		s.AuthUsers = map[string]string{"alice": "secret"}
		s.AuthTLSOnly = true
	})

	c := client(t, s)
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok || c.SupportsAuth("PLAIN") {
		t.Fatalf("before TLS: STARTTLS=%v AUTH PLAIN=%v, want STARTTLS only", ok, c.SupportsAuth("PLAIN"))
	}
	_ = c.Close()

	c, err := gosmtp.NewClientStartTLS(dial(t, s.Addr), clientTLS)
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer c.Close()
	if !c.SupportsAuth("PLAIN") {
		t.Fatal("inside TLS the server does not offer AUTH PLAIN")
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice", "secret")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("alice@example.org", []string{"bob@example.net"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if msgs := s.Messages(); len(msgs) != 1 || !msgs[0].TLS || msgs[0].User != "alice" {
		t.Fatalf("Messages() = %+v, want one sent by alice inside TLS", msgs)
	}
}

func TestMaxMessageBytes(t *testing.T) {
	s := start(t, func(s *Server) { s.MaxMessageBytes = 16 })
	err := send(t, s, nil)
	var smtpErr *gosmtp.SMTPError
	if !errors.As(err, &smtpErr) || smtpErr.Code != 552 {
		t.Fatalf("send %d bytes over a 16-byte limit: %v, want 552", len(body), err)
	}
	if got := len(s.Messages()); got != 0 {
		t.Errorf("Messages() holds %d, want none", got)
	}
}

func TestStartOnProxyProtocolListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewUnstartedServer("mx-b")
	s.StartOn(&proxyproto.Listener{Listener: ln, Policy: func(net.Addr) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }})
	t.Cleanup(s.Close)

	c := dial(t, s.Addr)
	header := proxyproto.HeaderProxyFromAddrs(1,
		&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 51234},
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25})
	if _, err := header.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	gc := gosmtp.NewClient(c)
	gc.CommandTimeout, gc.SubmissionTimeout = testTimeout, testTimeout
	if err := gc.SendMail("a@x", []string{"b@y"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if msgs := s.Messages(); len(msgs) != 1 || msgs[0].RemoteAddr != "192.0.2.7:51234" {
		t.Fatalf("Messages() = %+v, want RemoteAddr from the PROXY header", msgs)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	s := NewServer("mx-c")
	live := rawDial(t, s)
	live.expect("220 ")
	live.Send("EHLO c")
	live.expect("250 ")

	hung := NewUnstartedServer("mx-d")
	hung.Hang = true
	hung.Start()
	stuck := dial(t, hung.Addr)

	wiretest.CloseWithin(t, s.Close)
	wiretest.CloseWithin(t, hung.Close)
	live.expectEOF()
	if n, err := stuck.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("hung connection read %d, %v; want it closed", n, err)
	}
	assertGoroutinesGone(t)
	if _, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		t.Error("the listener still accepts after Close")
	}
	s.Close() // a second Close is harmless
}
