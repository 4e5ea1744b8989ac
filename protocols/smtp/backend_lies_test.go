package smtp

import (
	"io"
	"strings"
	"testing"
)

// A back-end out of step with its commands (here it answers MAIL three
// times) makes gatehouse read a stale 250 where it waits for DATA's 354:
// that is no acceptance of the message, so the client must not get 250
// for it, but a 4xx that keeps the message in its queue.
func TestRelayBackendOutOfStepGetsNo250(t *testing.T) {
	for name, pumped := range map[string]bool{"pump": true, "go-smtp reader": false} {
		t.Run(name, func(t *testing.T) {
			fake := &fakeMTA{
				Replies: map[string]string{"DATA.": "451 4.3.0 Queue file write error"},
				Handle: func(s *fakeSession, verb, _ string) bool {
					if verb == "MAIL" {
						s.say("250 2.1.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.0 Ok")
						return true
					}
					return false
				},
			}
			addr, _ := serve(t, newFrontend(startFake(t, fake)))
			c := greeted(t, addr)
			c.cmd("EHLO client.example", "250 ")
			c.cmd("MAIL FROM:<alice@example.org>", "250 ")
			c.cmd("RCPT TO:<bob@example.net>", "250 ")
			if pumped {
				c.cmd("DATA", "354 ")
				io.WriteString(c, "Subject: one\r\n\r\nfirst\r\n.\r\n")
			} else { // the message comes with DATA: go-smtp reads it
				io.WriteString(c, "DATA\r\nSubject: one\r\n\r\nfirst\r\n.\r\n")
				c.expect("354 ")
			}
			r := c.expect("4")
			if strings.HasPrefix(r, "2") {
				t.Fatalf("the client got %q for a message the back-end did not accept", r)
			}
		})
	}
}
