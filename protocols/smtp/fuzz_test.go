package smtp

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzReadReply feeds back-end replies, EHLO replies above all, to the
// reply reader and the capability parser: whatever a back-end sends, they
// return an error or a well-formed reply, and never panic.
func FuzzReadReply(f *testing.F) {
	for _, seed := range []string{
		"220 mx.example ESMTP Postfix\r\n",
		"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-XCLIENT NAME ADDR PORT\r\n250 CHUNKING\r\n",
		"250-exch1 Hello\r\n250-AUTH NTLM\r\n250-X-EXPS GSSAPI NTLM\r\n250 XRDST\r\n",
		"550-5.1.1 a\r\n550 5.1.1 b\r\n",
		"334 NTLM supported\r\n",
		"250\r\n", "250-\r\n250 \r\n", "25", "999 x\r\n", "250-a\n250 b\n", "250-a\r\n251 b\r\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, err := readReply(bufio.NewReaderSize(strings.NewReader(in), maxReplyLine))
		if err != nil {
			return
		}
		if r.Code < 200 || r.Code > 599 || len(r.Lines) == 0 || len(r.Lines) > maxReplyLines {
			t.Fatalf("readReply(%q) = %+v", in, r)
		}
		again, err := readReply(bufio.NewReader(strings.NewReader(string(r.wire()))))
		if err != nil || again.Code != r.Code || len(again.Lines) != len(r.Lines) {
			t.Fatalf("the reply %+v does not read back from its wire form: %+v, %v", r, again, err)
		}
		caps := parseEHLO(r)
		for kw := range caps {
			if kw == "" || strings.ToUpper(kw) != kw {
				t.Fatalf("parseEHLO(%q) has keyword %q", in, kw)
			}
		}
		_ = caps.size()
		_ = r.smtpError()
	})
}

// FuzzParseCommand feeds client command lines to the passthrough parser:
// a verb comes out upper case and made of letters, digits and hyphens.
func FuzzParseCommand(f *testing.F) {
	for _, seed := range []string{
		"EHLO client.example", "AUTH NTLM TlRMTVNTUAAB", "X-ANONYMOUSTLS", "STARTTLS", "MAIL FROM:<a@b> SIZE=10",
		"", " ", "\x16\x03\x01\x02\x00", "HELO", "ehlo [IPv6:::1]", "QUIT\r",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		verb, arg, err := parseCommand(line)
		if err != nil {
			return
		}
		if verb == "" || len(verb) > maxVerb || strings.ToUpper(verb) != verb {
			t.Fatalf("parseCommand(%q) verb %q", line, verb)
		}
		for _, c := range []byte(verb) {
			if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				t.Fatalf("parseCommand(%q) verb %q", line, verb)
			}
		}
		if name := heloName(arg); name != "" && strings.ContainsAny(name, " \r\n") {
			t.Fatalf("heloName(%q) = %q", arg, name)
		}
	})
}

// FuzzXClient checks that any HELO name a client may give makes one
// XCLIENT line within 512 bytes, and a Received header that stays one
// header.
func FuzzXClient(f *testing.F) {
	for _, seed := range []string{"client.example", "[192.0.2.1]", "a b", "x\r\nRCPT TO:<y>", strings.Repeat("\xff", 300)} {
		f.Add(seed)
	}
	p := peer{ip: netip.MustParseAddr("192.0.2.7"), port: 25}
	f.Fuzz(func(t *testing.T, helo string) {
		cmd := xclientCommand("NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT", p, helo)
		if len(cmd) > 512 || strings.ContainsAny(cmd, "\r\n") || !utf8.ValidString(cmd) {
			t.Fatalf("xclientCommand(%q) = %q", helo, cmd)
		}
		w := headerWord(helo)
		if w == "" || strings.ContainsAny(w, "\r\n()\\ ") || len(w) > 255 {
			t.Fatalf("headerWord(%q) = %q", helo, w)
		}
	})
}
