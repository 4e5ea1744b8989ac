package imaptest

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

const (
	msg1 = "From: a@example.org\r\nSubject: one\r\n\r\nfirst message\r\n"
	msg2 = "Subject: two\n\nbare LF body\n" // stored with CRLF
)

// start runs a server where alice's INBOX holds two messages.
func start(t *testing.T, configure func(*Server)) *Server {
	t.Helper()
	s := NewUnstartedServer("imap-a")
	s.AddUser("alice", "secret", []byte(msg1), []byte(msg2))
	if configure != nil {
		configure(s)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// client opens a go-imap client on a bounded connection to s.
func client(t *testing.T, s *Server) *imapclient.Client {
	t.Helper()
	c := imapclient.New(dialConn(t, s), nil)
	t.Cleanup(func() { _ = c.Close() })
	if err := c.WaitGreeting(); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return c
}

func TestRawTranscript(t *testing.T) {
	s := start(t, nil)
	w := dial(t, s)
	// The greeting names the back-end, so a person sees who answered.
	greeting := w.Expect("* OK [CAPABILITY IMAP4rev2 IMAP4rev1 ")
	if !strings.HasSuffix(greeting, "] imap-a IMAP server ready") {
		t.Errorf("greeting %q does not name the server", greeting)
	}
	if !strings.Contains(greeting, " AUTH=PLAIN") || strings.Contains(greeting, "STARTTLS") {
		t.Errorf("greeting %q: want AUTH=PLAIN and no STARTTLS without TLSConfig", greeting)
	}
	w.Send(`a1 LOGIN alice "secret"`)
	w.Expect("a1 OK [CAPABILITY ")
	w.Send("a2 SELECT INBOX")
	var exists bool
	for line := w.Line(); !strings.HasPrefix(line, "a2 "); line = w.Line() {
		exists = exists || line == "* 2 EXISTS"
	}
	if !exists {
		t.Error("SELECT INBOX did not report 2 EXISTS")
	}
	w.Send("a3 LOGOUT")
	w.Expect("* BYE")
	w.Expect("a3 OK")
	w.ExpectClosed()

	if got := s.Logins(); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("Logins() = %q", got)
	}
	rec := s.LoginRecords()[0]
	if host, _, _ := net.SplitHostPort(rec.RemoteAddr); host != "127.0.0.1" || rec.TLS {
		t.Errorf("LoginRecords()[0] = %+v, want a plaintext login from 127.0.0.1", rec)
	}
	if got := s.Sessions(); got != 1 {
		t.Errorf("Sessions() = %d, want 1", got)
	}
}

func TestClientFetch(t *testing.T) {
	s := start(t, nil)
	c := client(t, s)
	if err := c.Login("alice", "secret").Wait(); err != nil {
		t.Fatalf("LOGIN: %v", err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 2 {
		t.Fatalf("SELECT INBOX: %+v, %v; want 2 messages", sel, err)
	}
	section := &imap.FetchItemBodySection{}
	msgs, err := c.Fetch(imap.SeqSetNum(1, 2), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil || len(msgs) != 2 {
		t.Fatalf("FETCH 1:2: %d messages, %v", len(msgs), err)
	}
	for i, want := range []string{msg1, strings.ReplaceAll(msg2, "\n", "\r\n")} {
		if got := string(msgs[i].FindBodySection(section)); got != want {
			t.Errorf("message %d = %q, want %q", i+1, got, want)
		}
	}
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}
}

func TestAuthenticatePlain(t *testing.T) {
	s := start(t, nil)
	c := client(t, s)
	if err := c.Authenticate(sasl.NewPlainClient("", "alice", "secret")); err != nil {
		t.Fatalf("AUTHENTICATE PLAIN: %v", err)
	}
	if got := s.Logins(); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("Logins() = %q", got)
	}
}

func TestBadLogins(t *testing.T) {
	s := start(t, nil)
	for _, tc := range []struct{ user, pass string }{
		{"alice", "wrong"},
		{"nobody", "secret"},
	} {
		c := client(t, s)
		err := c.Login(tc.user, tc.pass).Wait()
		var imapErr *imap.Error
		if !errors.As(err, &imapErr) || imapErr.Code != imap.ResponseCodeAuthenticationFailed {
			t.Errorf("LOGIN %s %s: %v, want NO [AUTHENTICATIONFAILED]", tc.user, tc.pass, err)
		}
	}
	if got := s.Logins(); len(got) != 0 {
		t.Errorf("Logins() = %q, want none", got)
	}
}

func TestSTARTTLS(t *testing.T) {
	serverTLS, clientTLS := wiretest.ServerTLS(), wiretest.ClientTLS()
	s := start(t, func(s *Server) {
		s.TLSConfig = serverTLS
		s.AuthTLSOnly = true
	})

	w := dial(t, s)
	greeting := w.Expect("* OK ")
	if !strings.Contains(greeting, " STARTTLS") || !strings.Contains(greeting, " LOGINDISABLED") {
		t.Errorf("greeting %q: want STARTTLS and LOGINDISABLED before TLS", greeting)
	}
	w.Send("a1 LOGIN alice secret")
	w.Expect("a1 NO [PRIVACYREQUIRED]")

	c, err := imapclient.NewStartTLS(dialConn(t, s), &imapclient.Options{TLSConfig: clientTLS})
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Login("alice", "secret").Wait(); err != nil {
		t.Fatalf("LOGIN inside TLS: %v", err)
	}
	if rec := s.LoginRecords(); len(rec) != 1 || !rec[0].TLS {
		t.Errorf("LoginRecords() = %+v, want one login inside TLS", rec)
	}
}

func TestHangNeverGreets(t *testing.T) {
	s := start(t, func(s *Server) { s.Hang = true })
	w := dial(t, s)
	w.Send("a1 CAPABILITY")
	w.ExpectSilence(200 * time.Millisecond)
	if got := s.Sessions(); got != 1 {
		t.Errorf("Sessions() = %d, want the hung connection counted", got)
	}
}

func TestAddUserWhileRunning(t *testing.T) {
	s := NewServer("imap-b")
	t.Cleanup(s.Close)
	s.AddUser("bob", "pw")
	c := client(t, s)
	if err := c.Login("bob", "pw").Wait(); err != nil {
		t.Fatalf("LOGIN bob: %v", err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 0 {
		t.Fatalf("SELECT INBOX: %+v, %v; want an empty INBOX", sel, err)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	s := NewServer("imap-c")
	live := dial(t, s)
	live.Expect("* OK ")

	hung := NewUnstartedServer("imap-d")
	hung.Hang = true
	hung.Start()
	stuck := dial(t, hung)

	wiretest.CloseWithin(t, s.Close)
	wiretest.CloseWithin(t, hung.Close)
	live.ExpectClosed()
	stuck.ExpectClosed()
	assertGoroutinesGone(t)
	if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		_ = c.Close()
		t.Error("the listener still accepts after Close")
	}
	s.Close() // a second Close is harmless
}
