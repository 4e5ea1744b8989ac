package pop3test

import (
	"encoding/base64"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

const (
	msg1 = "From: a@example.org\r\nSubject: one\r\n\r\nfirst body line\r\n.dotted line\r\nthird line\r\n"
	msg2 = "Subject: two\n\nbare LF body\n" // served with CRLF
)

// start runs a server with alice's two-message mailbox for the length of
// the test.
func start(t *testing.T, configure func(*Server)) *Server {
	t.Helper()
	s := NewUnstartedServer("pop-a")
	s.Mailboxes = map[string]*Mailbox{
		"alice": {Password: "secret", Messages: [][]byte{[]byte(msg1), []byte(msg2)}},
	}
	if configure != nil {
		configure(s)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func TestTranscript(t *testing.T) {
	s := start(t, nil)
	w := greeted(t, s)

	w.Send("CAPA")
	caps := multi(w)
	for _, want := range []string{"USER", "SASL PLAIN", "UIDL", "TOP", "RESP-CODES", "IMPLEMENTATION pop-a"} {
		if !slices.Contains(caps, want) {
			t.Errorf("CAPA %q lacks %q", caps, want)
		}
	}
	if slices.Contains(caps, "STLS") {
		t.Errorf("CAPA %q offers STLS without a TLSConfig", caps)
	}

	w.Send("USER alice", "PASS secret") // pipelined: both answered in order
	w.Expect("+OK")
	w.Expect("+OK pop-a: alice has 2 messages (")

	size2 := len(strings.ReplaceAll(msg2, "\n", "\r\n"))
	w.Send("STAT")
	w.Expect("+OK 2 " + strconv.Itoa(len(msg1)+size2))
	w.Send("LIST")
	if got, want := multi(w), []string{"1 " + strconv.Itoa(len(msg1)), "2 " + strconv.Itoa(size2)}; !slices.Equal(got, want) {
		t.Errorf("LIST = %q, want %q", got, want)
	}
	w.Send("UIDL 2")
	w.Expect("+OK 2 00000002")

	// RETR dot-stuffs: ".dotted line" travels as "..dotted line".
	w.Send("RETR 1")
	if got, want := multi(w), []string{"From: a@example.org", "Subject: one", "", "first body line", "..dotted line", "third line"}; !slices.Equal(got, want) {
		t.Errorf("RETR 1 = %q, want %q", got, want)
	}
	w.Send("TOP 1 1")
	if got, want := multi(w), []string{"From: a@example.org", "Subject: one", "", "first body line"}; !slices.Equal(got, want) {
		t.Errorf("TOP 1 1 = %q, want %q", got, want)
	}

	w.Send("DELE 1")
	w.Expect("+OK message 1 deleted")
	w.Send("RETR 1")
	w.Expect("-ERR message 1 already deleted")
	w.Send("RSET")
	w.Expect("+OK maildrop has 2 messages")
	w.Send("DELE 1", "NOOP", "QUIT")
	w.Expect("+OK message 1 deleted")
	w.Expect("+OK")
	w.Expect("+OK pop-a POP3 server signing off (1 messages left)")
	w.ExpectClosed()

	if got := s.Messages("alice"); len(got) != 1 || string(got[0]) != strings.ReplaceAll(msg2, "\n", "\r\n") {
		t.Errorf("after QUIT the maildrop holds %q, want message 2 only", got)
	}
	if got := s.Logins(); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("Logins() = %q", got)
	}
	rec := s.LoginRecords()[0]
	if host, _, _ := net.SplitHostPort(rec.RemoteAddr); host != "127.0.0.1" || rec.Mechanism != "USER" || rec.TLS {
		t.Errorf("LoginRecords()[0] = %+v, want USER from 127.0.0.1 without TLS", rec)
	}
}

func TestAuthPlain(t *testing.T) {
	s := start(t, nil)
	creds := base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret"))

	t.Run("initial response", func(t *testing.T) {
		w := greeted(t, s)
		w.Send("AUTH PLAIN " + creds)
		w.Expect("+OK pop-a: alice has 2 messages")
		w.Send("QUIT")
		w.Expect("+OK")
	})
	t.Run("continuation", func(t *testing.T) {
		w := greeted(t, s)
		w.Send("AUTH PLAIN")
		if got := w.Line(); got != "+ " { // an empty challenge (RFC 5034 §4)
			t.Fatalf("continuation %q, want %q", got, "+ ")
		}
		w.Send(creds)
		w.Expect("+OK pop-a: alice has 2 messages")
		w.Send("QUIT")
		w.Expect("+OK")
	})
	t.Run("cancel", func(t *testing.T) {
		w := greeted(t, s)
		w.Send("AUTH PLAIN")
		w.Expect("+ ")
		w.Send("*")
		w.Expect("-ERR authentication cancelled")
	})
	t.Run("failures", func(t *testing.T) {
		w := greeted(t, s)
		for _, resp := range []string{
			base64.StdEncoding.EncodeToString([]byte("\x00alice\x00wrong")),
			base64.StdEncoding.EncodeToString([]byte("bob\x00alice\x00secret")), // another identity
			base64.StdEncoding.EncodeToString([]byte("no separators")),
		} {
			w.Send("AUTH PLAIN " + resp)
			w.Expect("-ERR [AUTH] authentication failed")
		}
		w.Send("AUTH PLAIN !!!")
		w.Expect("-ERR invalid base64")
		w.Send("AUTH CRAM-MD5")
		w.Expect("-ERR unsupported authentication mechanism")
		w.Send("AUTH")
		if got := multi(w); !slices.Equal(got, []string{"PLAIN"}) {
			t.Errorf("AUTH lists %q, want PLAIN", got)
		}
	})
	if got := s.Logins(); !slices.Equal(got, []string{"alice", "alice"}) {
		t.Fatalf("Logins() = %q, want the two successful ones", got)
	}
	if rec := s.LoginRecords()[0]; rec.Mechanism != "PLAIN" {
		t.Errorf("Mechanism = %q, want PLAIN", rec.Mechanism)
	}
}

func TestBadLogins(t *testing.T) {
	s := start(t, nil)
	w := greeted(t, s)
	w.Send("PASS secret")
	w.Expect("-ERR USER first")
	w.Send("USER alice", "PASS wrong")
	w.Expect("+OK")
	w.Expect("-ERR [AUTH] invalid user name or password")
	w.Send("USER nobody", "PASS secret")
	w.Expect("+OK") // USER does not tell whether the user exists
	w.Expect("-ERR [AUTH] invalid user name or password")
	w.Send("STAT")
	w.Expect("-ERR unknown command in AUTHORIZATION state")
	w.Send("APOP alice 0123456789abcdef")
	w.Expect("-ERR APOP not supported")
	if got := s.Logins(); len(got) != 0 {
		t.Errorf("Logins() = %q, want none", got)
	}
}

func TestTooManyErrorsCloses(t *testing.T) {
	s := start(t, nil)
	w := greeted(t, s)
	for range maxErrors - 1 {
		w.Send("GET / HTTP/1.1")
		w.Expect("-ERR")
	}
	w.Send("GET / HTTP/1.1")
	w.Expect("-ERR too many bad commands")
	w.ExpectClosed()
}

func TestLongLineCloses(t *testing.T) {
	s := start(t, nil)
	w := greeted(t, s)
	w.Send("USER " + strings.Repeat("a", maxLine))
	w.Expect("-ERR line too long")
	w.ExpectClosed()
}

func TestSTLSDropsPipelinedCommands(t *testing.T) {
	serverTLS, clientTLS := wiretest.ServerTLS(), wiretest.ClientTLS()
	s := start(t, func(s *Server) { s.TLSConfig = serverTLS })
	w := greeted(t, s)
	w.Send("CAPA")
	if caps := multi(w); !slices.Contains(caps, "STLS") {
		t.Fatalf("CAPA %q does not offer STLS", caps)
	}

	// CVE-2011-0411: USER and PASS ride behind STLS in the same segment.
	// They must be discarded, never answered inside TLS.
	w.Send("STLS", "USER alice", "PASS secret")
	w.Expect("+OK Begin TLS negotiation")
	w.StartTLS(clientTLS)
	w.ExpectSilence(200 * time.Millisecond)

	w.Send("CAPA")
	if caps := multi(w); slices.Contains(caps, "STLS") {
		t.Errorf("CAPA inside TLS %q still offers STLS", caps)
	}
	w.Send("STLS")
	w.Expect("-ERR command not permitted when TLS active")
	w.Send("PASS secret")
	w.Expect("-ERR USER first") // the injected USER was not kept
	if got := s.Logins(); len(got) != 0 {
		t.Fatalf("Logins() = %q: pipelined plaintext was executed", got)
	}
	w.Send("USER alice", "PASS secret")
	w.Expect("+OK")
	w.Expect("+OK pop-a: alice has 2 messages")
	if rec := s.LoginRecords(); len(rec) != 1 || !rec[0].TLS {
		t.Errorf("LoginRecords() = %+v, want one inside TLS", rec)
	}
}

func TestAuthTLSOnly(t *testing.T) {
	serverTLS, clientTLS := wiretest.ServerTLS(), wiretest.ClientTLS()
	s := start(t, func(s *Server) {
		s.TLSConfig = serverTLS
		s.AuthTLSOnly = true
	})
	w := greeted(t, s)
	w.Send("CAPA")
	if caps := multi(w); slices.Contains(caps, "USER") || slices.Contains(caps, "SASL PLAIN") {
		t.Errorf("CAPA before TLS %q offers plaintext logins", caps)
	}
	w.Send("USER alice")
	w.Expect("-ERR [AUTH] Plaintext authentication disallowed")
	w.Send("STLS")
	w.Expect("+OK")
	w.StartTLS(clientTLS)
	w.Send("USER alice", "PASS secret")
	w.Expect("+OK")
	w.Expect("+OK pop-a: alice has 2 messages")
}

func TestMaildropLock(t *testing.T) {
	s := start(t, nil)
	first := loggedIn(t, s, "alice", "secret")
	second := greeted(t, s)
	second.Send("USER alice", "PASS secret")
	second.Expect("+OK")
	second.Expect("-ERR [IN-USE]")

	// Deletions without QUIT are forgotten, and the lock is released.
	first.Send("DELE 1", "DELE 2")
	first.Expect("+OK")
	first.Expect("+OK")
	_ = first.Close()
	deadline := time.Now().Add(wiretest.Wait)
	for {
		second.Send("USER alice", "PASS secret")
		second.Expect("+OK")
		if line := second.Line(); strings.HasPrefix(line, "+OK pop-a: alice has 2 messages") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("still %q after the first session ended", line)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := len(s.Messages("alice")); got != 2 {
		t.Errorf("maildrop holds %d messages, want 2", got)
	}
}

func TestHangNeverGreets(t *testing.T) {
	s := start(t, func(s *Server) { s.Hang = true })
	w := dial(t, s)
	w.Send("CAPA")
	w.ExpectSilence(200 * time.Millisecond)
	if got := s.Sessions(); got != 1 {
		t.Errorf("Sessions() = %d, want the hung connection counted", got)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	s := NewServer("pop-b")
	live := greeted(t, s)

	hung := NewUnstartedServer("pop-c")
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
