package pop3test

import (
	"encoding/base64"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
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

	w.send("CAPA")
	caps := w.multi()
	for _, want := range []string{"USER", "SASL PLAIN", "UIDL", "TOP", "RESP-CODES", "IMPLEMENTATION pop-a"} {
		if !slices.Contains(caps, want) {
			t.Errorf("CAPA %q lacks %q", caps, want)
		}
	}
	if slices.Contains(caps, "STLS") {
		t.Errorf("CAPA %q offers STLS without a TLSConfig", caps)
	}

	w.send("USER alice", "PASS secret") // pipelined: both answered in order
	w.expect("+OK")
	w.expect("+OK pop-a: alice has 2 messages (")

	size2 := len(strings.ReplaceAll(msg2, "\n", "\r\n"))
	w.send("STAT")
	w.expect("+OK 2 " + strconv.Itoa(len(msg1)+size2))
	w.send("LIST")
	if got, want := w.multi(), []string{"1 " + strconv.Itoa(len(msg1)), "2 " + strconv.Itoa(size2)}; !slices.Equal(got, want) {
		t.Errorf("LIST = %q, want %q", got, want)
	}
	w.send("UIDL 2")
	w.expect("+OK 2 00000002")

	// RETR dot-stuffs: ".dotted line" travels as "..dotted line".
	w.send("RETR 1")
	if got, want := w.multi(), []string{"From: a@example.org", "Subject: one", "", "first body line", "..dotted line", "third line"}; !slices.Equal(got, want) {
		t.Errorf("RETR 1 = %q, want %q", got, want)
	}
	w.send("TOP 1 1")
	if got, want := w.multi(), []string{"From: a@example.org", "Subject: one", "", "first body line"}; !slices.Equal(got, want) {
		t.Errorf("TOP 1 1 = %q, want %q", got, want)
	}

	w.send("DELE 1")
	w.expect("+OK message 1 deleted")
	w.send("RETR 1")
	w.expect("-ERR message 1 already deleted")
	w.send("RSET")
	w.expect("+OK maildrop has 2 messages")
	w.send("DELE 1", "NOOP", "QUIT")
	w.expect("+OK message 1 deleted")
	w.expect("+OK")
	w.expect("+OK pop-a POP3 server signing off (1 messages left)")
	w.expectEOF()

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
		w.send("AUTH PLAIN " + creds)
		w.expect("+OK pop-a: alice has 2 messages")
		w.send("QUIT")
		w.expect("+OK")
	})
	t.Run("continuation", func(t *testing.T) {
		w := greeted(t, s)
		w.send("AUTH PLAIN")
		if got := w.line(); got != "+ " { // an empty challenge (RFC 5034 §4)
			t.Fatalf("continuation %q, want %q", got, "+ ")
		}
		w.send(creds)
		w.expect("+OK pop-a: alice has 2 messages")
		w.send("QUIT")
		w.expect("+OK")
	})
	t.Run("cancel", func(t *testing.T) {
		w := greeted(t, s)
		w.send("AUTH PLAIN")
		w.expect("+ ")
		w.send("*")
		w.expect("-ERR authentication cancelled")
	})
	t.Run("failures", func(t *testing.T) {
		w := greeted(t, s)
		for _, resp := range []string{
			base64.StdEncoding.EncodeToString([]byte("\x00alice\x00wrong")),
			base64.StdEncoding.EncodeToString([]byte("bob\x00alice\x00secret")), // another identity
			base64.StdEncoding.EncodeToString([]byte("no separators")),
		} {
			w.send("AUTH PLAIN " + resp)
			w.expect("-ERR [AUTH] authentication failed")
		}
		w.send("AUTH PLAIN !!!")
		w.expect("-ERR invalid base64")
		w.send("AUTH CRAM-MD5")
		w.expect("-ERR unsupported authentication mechanism")
		w.send("AUTH")
		if got := w.multi(); !slices.Equal(got, []string{"PLAIN"}) {
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
	w.send("PASS secret")
	w.expect("-ERR USER first")
	w.send("USER alice", "PASS wrong")
	w.expect("+OK")
	w.expect("-ERR [AUTH] invalid user name or password")
	w.send("USER nobody", "PASS secret")
	w.expect("+OK") // USER does not tell whether the user exists
	w.expect("-ERR [AUTH] invalid user name or password")
	w.send("STAT")
	w.expect("-ERR unknown command in AUTHORIZATION state")
	w.send("APOP alice 0123456789abcdef")
	w.expect("-ERR APOP not supported")
	if got := s.Logins(); len(got) != 0 {
		t.Errorf("Logins() = %q, want none", got)
	}
}

func TestTooManyErrorsCloses(t *testing.T) {
	s := start(t, nil)
	w := greeted(t, s)
	for range maxErrors - 1 {
		w.send("GET / HTTP/1.1")
		w.expect("-ERR")
	}
	w.send("GET / HTTP/1.1")
	w.expect("-ERR too many bad commands")
	w.expectEOF()
}

func TestLongLineCloses(t *testing.T) {
	s := start(t, nil)
	w := greeted(t, s)
	w.send("USER " + strings.Repeat("a", maxLine))
	w.expect("-ERR line too long")
	w.expectEOF()
}

func TestSTLSDropsPipelinedCommands(t *testing.T) {
	serverTLS, clientTLS := tlsConfigs(t)
	s := start(t, func(s *Server) { s.TLSConfig = serverTLS })
	w := greeted(t, s)
	w.send("CAPA")
	if caps := w.multi(); !slices.Contains(caps, "STLS") {
		t.Fatalf("CAPA %q does not offer STLS", caps)
	}

	// CVE-2011-0411: USER and PASS ride behind STLS in the same segment.
	// They must be discarded, never answered inside TLS.
	w.send("STLS", "USER alice", "PASS secret")
	w.expect("+OK Begin TLS negotiation")
	w.startTLS(clientTLS)
	w.expectSilence()

	w.send("CAPA")
	if caps := w.multi(); slices.Contains(caps, "STLS") {
		t.Errorf("CAPA inside TLS %q still offers STLS", caps)
	}
	w.send("STLS")
	w.expect("-ERR command not permitted when TLS active")
	w.send("PASS secret")
	w.expect("-ERR USER first") // the injected USER was not kept
	if got := s.Logins(); len(got) != 0 {
		t.Fatalf("Logins() = %q: pipelined plaintext was executed", got)
	}
	w.send("USER alice", "PASS secret")
	w.expect("+OK")
	w.expect("+OK pop-a: alice has 2 messages")
	if rec := s.LoginRecords(); len(rec) != 1 || !rec[0].TLS {
		t.Errorf("LoginRecords() = %+v, want one inside TLS", rec)
	}
}

func TestAuthTLSOnly(t *testing.T) {
	serverTLS, clientTLS := tlsConfigs(t)
	s := start(t, func(s *Server) {
		s.TLSConfig = serverTLS
		s.AuthTLSOnly = true
	})
	w := greeted(t, s)
	w.send("CAPA")
	if caps := w.multi(); slices.Contains(caps, "USER") || slices.Contains(caps, "SASL PLAIN") {
		t.Errorf("CAPA before TLS %q offers plaintext logins", caps)
	}
	w.send("USER alice")
	w.expect("-ERR [AUTH] Plaintext authentication disallowed")
	w.send("STLS")
	w.expect("+OK")
	w.startTLS(clientTLS)
	w.send("USER alice", "PASS secret")
	w.expect("+OK")
	w.expect("+OK pop-a: alice has 2 messages")
}

func TestMaildropLock(t *testing.T) {
	s := start(t, nil)
	first := loggedIn(t, s, "alice", "secret")
	second := greeted(t, s)
	second.send("USER alice", "PASS secret")
	second.expect("+OK")
	second.expect("-ERR [IN-USE]")

	// Deletions without QUIT are forgotten, and the lock is released.
	first.send("DELE 1", "DELE 2")
	first.expect("+OK")
	first.expect("+OK")
	_ = first.c.Close()
	deadline := time.Now().Add(testTimeout)
	for {
		second.send("USER alice", "PASS secret")
		second.expect("+OK")
		if line := second.line(); strings.HasPrefix(line, "+OK pop-a: alice has 2 messages") {
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
	w.send("CAPA")
	w.expectSilence()
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

	closeWithin(t, s.Close)
	closeWithin(t, hung.Close)
	live.expectEOF()
	stuck.expectEOF()
	assertGoroutinesGone(t)
	if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		_ = c.Close()
		t.Error("the listener still accepts after Close")
	}
	s.Close() // a second Close is harmless
}
