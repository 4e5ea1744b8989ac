package smtp

import (
	"bufio"
	"errors"
	"net/netip"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/gatehouse-proxy/gatehouse/proxy"
)

func readOne(s string) (reply, error) {
	return readReply(bufio.NewReaderSize(strings.NewReader(s), maxReplyLine))
}

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code int
		n    int
		err  error
	}{
		{"220 mx.example ESMTP\r\n", 220, 1, nil},
		{"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", 250, 3, nil},
		{"250\r\n", 250, 1, nil},
		{"250 bare LF\n", 250, 1, nil},
		{"250-a\r\n550 b\r\n", 0, 0, errBadReply},
		{"25O ok\r\n", 0, 0, errBadReply},
		{"2500 ok\r\n", 0, 0, errBadReply},
		{"+OK pop3\r\n", 0, 0, errBadReply},
		{"199 too low\r\n", 0, 0, errBadReply},
		{"250-never ends\r\n", 0, 0, nil},
		{strings.Repeat("x", maxReplyLine+10) + "\r\n", 0, 0, errLineTooLong},
		{strings.Repeat("250-x\r\n", maxReplyLines+1) + "250 x\r\n", 0, 0, errBadReply},
	} {
		r, err := readOne(tc.in)
		switch {
		case tc.err != nil && !errors.Is(err, tc.err):
			t.Errorf("readReply(%.40q) error %v, want %v", tc.in, err, tc.err)
		case tc.err == nil && tc.code == 0 && err == nil:
			t.Errorf("readReply(%.40q) succeeded, want an error", tc.in)
		case tc.code != 0 && (err != nil || r.Code != tc.code || len(r.Lines) != tc.n):
			t.Errorf("readReply(%.40q) = %+v, %v", tc.in, r, err)
		}
	}
}

func TestParseEHLO(t *testing.T) {
	r, err := readOne("250-mx.example Hello\r\n250-SIZE 37748736\r\n250-auth PLAIN LOGIN\r\n250-DSN\r\n250 XCLIENT NAME ADDR\r\n")
	if err != nil {
		t.Fatal(err)
	}
	caps := parseEHLO(r)
	if caps.size() != 37748736 || !caps.has("DSN") || caps.has("MX.EXAMPLE") || caps["XCLIENT"] != "NAME ADDR" {
		t.Errorf("parseEHLO = %v", caps)
	}
	if !caps.authMechanism("login") || caps.authMechanism("NTLM") {
		t.Errorf("AUTH mechanisms of %v", caps)
	}
	if (capabilities{"SIZE": ""}).size() != 0 || (capabilities{"SIZE": "-5"}).size() != 0 {
		t.Errorf("a SIZE without a limit must read as 0")
	}
}

// A back-end's reply becomes go-smtp's error with the enhanced code split
// off every line, so that go-smtp writes it once, on the last line.
func TestReplySMTPError(t *testing.T) {
	r := reply{Code: 550, Lines: []string{"5.1.1 <x@example.net>: Recipient address rejected:", "5.1.1 User unknown"}}
	e := r.smtpError()
	if e.Code != 550 || e.EnhancedCode != (gosmtp.EnhancedCode{5, 1, 1}) || e.Message != "<x@example.net>: Recipient address rejected:\nUser unknown" {
		t.Errorf("smtpError = %+v", e)
	}
	e = reply{Code: 452, Lines: []string{"Too many recipients"}}.smtpError()
	if e.EnhancedCode != gosmtp.EnhancedCodeNotSet || e.Message != "Too many recipients" {
		t.Errorf("without an enhanced code: %+v", e)
	}
	if ok := okReply("2.0.0 Ok: queued as 4Xyz"); ok.Code != 250 || ok.EnhancedCode != (gosmtp.EnhancedCode{2, 0, 0}) || ok.Message != "Ok: queued as 4Xyz" {
		t.Errorf("okReply = %+v", ok)
	}
	for _, s := range []string{"9.1.1 x", "5.1 x", "5.a.1 x", "5.1.1000 x"} {
		if _, _, ok := cutEnhanced(s); ok {
			t.Errorf("cutEnhanced(%q) accepted it", s)
		}
	}
}

// An extension is advertised only while every back-end seen has it.
func TestCapCache(t *testing.T) {
	a, b := proxy.NewBackend("a", "a:25", 1), proxy.NewBackend("b", "b:25", 1)
	pool := []*proxy.Backend{a, b}
	var cc capCache
	rich := capabilities{"SIZE": "5000", "DSN": "", "SMTPUTF8": ""}
	cc.learn("a", rich)
	if ext := cc.common(pool, rich); ext != (extensions{size: 5000, utf8: true, dsn: true}) {
		t.Errorf("one back-end seen: %+v", ext)
	}
	cc.learn("b", capabilities{"SIZE": "3000", "DSN": ""})
	if ext := cc.common(pool, rich); ext != (extensions{size: 3000, dsn: true}) {
		t.Errorf("both seen: %+v", ext)
	}
	if ext := cc.common(pool, capabilities{}); ext != (extensions{size: 3000}) {
		t.Errorf("a current back-end without extensions: %+v", ext)
	}
}

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct{ in, verb, arg string }{
		{"ehlo client.example", "EHLO", "client.example"},
		{"AUTH NTLM TlRMTVNTUAAB", "AUTH", "NTLM TlRMTVNTUAAB"},
		{"X-EXPS GSSAPI", "X-EXPS", "GSSAPI"},
		{"QUIT", "QUIT", ""},
		{"MAIL FROM:<a@b>  ", "MAIL", "FROM:<a@b>"},
	} {
		verb, arg, err := parseCommand(tc.in)
		if err != nil || verb != tc.verb || arg != tc.arg {
			t.Errorf("parseCommand(%q) = %q, %q, %v", tc.in, verb, arg, err)
		}
	}
	for _, in := range []string{"", " EHLO", "\x16\x03\x01", "EH\x00LO x", strings.Repeat("A", 21)} {
		if _, _, err := parseCommand(in); !errors.Is(err, errBadCommand) {
			t.Errorf("parseCommand(%q) error %v", in, err)
		}
	}
}

func TestHeloName(t *testing.T) {
	for in, want := range map[string]string{
		"client.example":            "client.example",
		"[192.0.2.1] extra words":   "[192.0.2.1]",
		"":                          "",
		"bad\x7fname":               "",
		strings.Repeat("a", 256):    "",
		"caf\xc3\xa9.example xx yy": "",
	} {
		if got := heloName(in); got != want {
			t.Errorf("heloName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestXClientCommand(t *testing.T) {
	p := peer{ip: netip.MustParseAddr("2001:db8::7"), port: 40000}
	got := xclientCommand("ADDR NAME PORT helo", p, "odd name+=")
	if want := "XCLIENT HELO=odd+20name+2B+3D PORT=40000 NAME=[UNAVAILABLE] ADDR=IPV6:2001:db8::7"; got != want {
		t.Errorf("xclientCommand = %q, want %q", got, want)
	}
	p.ip = netip.MustParseAddr("::ffff:192.0.2.7")
	if got := xclientCommand("ADDR", p, "x"); got != "XCLIENT ADDR=192.0.2.7" {
		t.Errorf("an IPv4-mapped address gave %q", got)
	}
	if got := xclientCommand("HELO ADDR", p, strings.Repeat("\x01", 100)); strings.Contains(got, "HELO=") {
		t.Errorf("an over-long HELO value was sent: %q", got)
	}
}
