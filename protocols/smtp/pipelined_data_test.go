package smtp

import (
	"io"
	"strings"
	"testing"
)

// A message pipelined behind the end of one the pump relayed (the client
// sent the next MAIL, RCPT, DATA and message in the same packet as the
// first message's end) is read by go-smtp, which never saw those bytes
// through the tap: a line of a dot and a bare LF in it must still get the
// message refused, not relayed with the dot dropped.
func TestRelayDotBareLFRefusedAfterPumpedMessage(t *testing.T) {
	fake := &fakeMTA{}
	addr, _ := serve(t, newFrontend(startFake(t, fake)))
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("MAIL FROM:<alice@example.org>", "250 ")
	c.cmd("RCPT TO:<bob@example.net>", "250 ")
	c.cmd("DATA", "354 ")
	io.WriteString(c, "Subject: one\r\n\r\nfirst\r\n.\r\n"+
		"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n"+
		"Subject: two\r\n\r\nsecond\r\n.\nthird\r\n.\r\n")
	c.expect("250 2.0.0 Ok: queued")
	c.expect("250 ")
	c.expect("250 ")
	c.expect("354 ")
	c.expect("550 5.6.0 ")
	if msgs := fake.messages(); len(msgs) != 1 {
		t.Errorf("the back-end got %d messages, want only the first: %q", len(msgs), msgs)
	}
}

// go-smtp reads what followed a pumped message in reads of 4 KiB; a read
// that happens to end with DATA while more of the pipelined bytes are
// still held must not hand the next message to the pump, which reads the
// socket and would skip (and then drop) the bytes still held.
func TestRelayPipelinedMessageAcrossHeldBytes(t *testing.T) {
	fake := &fakeMTA{}
	addr, _ := serve(t, newFrontend(startFake(t, fake)))
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("MAIL FROM:<alice@example.org>", "250 ")
	c.cmd("RCPT TO:<bob@example.net>", "250 ")
	c.cmd("DATA", "354 ")
	// go-smtp is handed ".\r\n" and then the leftover: pad with NOOPs so
	// that its first 4096-byte read ends exactly after DATA.
	head := ".\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n"
	tail := "DATA\r\n"
	noops := (4096 - len(head) - len(tail)) / len("NOOP\r\n")
	pad := strings.Repeat("NOOP\r\n", noops)
	pad += strings.Repeat("X", 4096-len(head)-len(tail)-len(pad)-2) + "\r\n"
	first := strings.TrimPrefix(head, ".\r\n") + pad + tail
	io.WriteString(c, "Subject: one\r\n\r\nfirst\r\n.\r\n"+first+"Subject: two\r\n\r\nsecond\r\n.\r\n")
	c.expect("250 2.0.0 Ok: queued")
	c.expect("250 ")
	c.expect("250 ")
	for range noops {
		c.expect("250 ")
	}
	c.expect("501 ")
	c.expect("354 ")
	c.expect("250 2.0.0 Ok: queued")
	msgs := fake.messages()
	if len(msgs) != 2 || !strings.Contains(msgs[1], "second") {
		t.Errorf("the back-end got %q, want two messages, the second with its text", msgs)
	}
}
