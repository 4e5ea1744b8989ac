package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// pump runs a dataPump over in, read whole or a byte at a time; leftover
// is what followed the end of data, whether the pump read it or left it
// unread.
func pump(t *testing.T, in string, oneByte bool) (out, leftover string, err error) {
	t.Helper()
	src := strings.NewReader(in)
	var r io.Reader = src
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	p := &dataPump{in: r, out: w}
	left, readErr, err := p.run(make([]byte, 64<<10))
	if readErr != nil {
		return b.String(), "", readErr
	}
	unread, _ := io.ReadAll(src)
	return b.String(), string(left) + string(unread), err
}

// The pump forwards the stuffed stream as is up to and including its end,
// turns a bare LF into CRLF and stuffs a dot after it, refuses a dot with
// a bare CR or LF after a CRLF, and returns what followed the end; the
// same whether the client's bytes come at once or one by one.
func TestDataPump(t *testing.T) {
	for _, tc := range []struct {
		in, out, left string
		err           error
	}{
		{"Subject: x\r\n\r\nHello.\r\n.\r\nQUIT\r\n", "Subject: x\r\n\r\nHello.\r\n.\r\n", "QUIT\r\n", nil},
		{".\r\n", ".\r\n", "", nil},
		{"..leading dot\r\n.\r\n", "..leading dot\r\n.\r\n", "", nil},
		{"a\nb\r\n.\r\n", "a\r\nb\r\n.\r\n", "", nil},
		{"first\n.\nMAIL FROM:<e@x>\r\n.\r\n", "first\r\n..\r\nMAIL FROM:<e@x>\r\n.\r\n", "", nil},
		{"first\n.\r\nstill data\r\n.\r\n", "first\r\n..\r\nstill data\r\n.\r\n", "", nil},
		{"bare\rCR\r\n.\r\n", "bare\rCR\r\n.\r\n", "", nil},
		{"x\r\n.\nMAIL\r\n.\r\nNOOP\r\n", "x\r\n", "NOOP\r\n", errDotAnomaly},
		{"x\r\n.\r\r\nMAIL\r\n.\r\n", "x\r\n", "", errDotAnomaly},
		{".\ny\r\n.\r\n", "", "", errDotAnomaly},
	} {
		for _, oneByte := range []bool{false, true} {
			out, left, err := pump(t, tc.in, oneByte)
			if !errors.Is(err, tc.err) || left != tc.left || (tc.err == nil && out != tc.out) ||
				(tc.err != nil && !strings.HasPrefix(tc.out, out) && out != tc.out) {
				t.Errorf("pump(%q, oneByte %v) = %q, leftover %q, %v; want %q, %q, %v",
					tc.in, oneByte, out, left, err, tc.out, tc.left, tc.err)
			}
		}
	}
	if _, _, err := pump(t, "no end\r\n", false); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a message without its end: %v", err)
	}
}

// A client that sends its message without waiting for the 354 (improper
// pipelining) is still served, by go-smtp's reader.
func TestRelayDataPipelinedBeforeGoAhead(t *testing.T) {
	fake := &fakeMTA{}
	addr, _ := serve(t, newFrontend(startFake(t, fake)))
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.Send("MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>", "DATA", "Subject: x", "", "..dot", ".", "QUIT")
	c.expect("250 ")
	c.expect("250 ")
	c.expect("354 ")
	c.expect("250 2.0.0 Ok: queued")
	c.expect("221 ")
	if msgs := fake.messages(); len(msgs) != 1 || msgs[0] != "Subject: x\r\n\r\n..dot\r\n" {
		t.Errorf("back-end got %q", msgs)
	}
}

// FuzzDataPump: whatever a client sends, the pump decides the same
// whether the bytes come at once or one by one (what it forwarded of a
// message it refuses may differ: the back-end never gets that message's
// end, and its connection is closed), and a message it passes
// has exactly one end for the back-end, strict or lenient about line
// ends: its last line, "." (no line of a lone dot before it, counting a
// line as what ends at an LF, one CR before it stripped).
func FuzzDataPump(f *testing.F) {
	for _, seed := range []string{
		"Subject: x\r\n\r\nHello.\r\n.\r\nQUIT\r\n", ".\r\n", "a\n.\nb\r\n.\r\n", "x\r\n.\nMAIL\r\n.\r\n",
		"x\r\n.\r\r\n.\r\n", "\r\r\n.\r\n", "\n.\r\n.\r\n", "..\r\n.\r\n", "a\r\r\r\n..\n.\r\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if len(in) > 4096 { // the pump looks at line ends: length adds nothing
			return
		}
		out, left, err := pump(t, in, false)
		out1, left1, err1 := pump(t, in, true)
		if left != left1 || !errors.Is(err1, err) && !errors.Is(err, err1) || err == nil && out != out1 {
			t.Fatalf("pump(%q): whole %q %q %v, byte by byte %q %q %v", in, out, left, err, out1, left1, err1)
		}
		if err != nil {
			return
		}
		lines := strings.SplitAfter(out, "\n")
		if lines[len(lines)-1] == "" {
			lines = lines[:len(lines)-1]
		}
		for i, l := range lines {
			l = strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r")
			if l == "." && i != len(lines)-1 {
				t.Fatalf("pump(%q) forwarded %q: a lone dot before the end", in, out)
			}
			if i == len(lines)-1 && (l != "." || !strings.HasSuffix(out, ".\r\n")) {
				t.Fatalf("pump(%q) forwarded %q: it does not end with the end of data", in, out)
			}
		}
	})
}
