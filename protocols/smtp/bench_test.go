package smtp

import (
	"strings"
	"testing"
	"time"
)

// BenchmarkRelayMessage sends 1 KiB messages one after another over one
// session through a relay Frontend to an in-process back-end; bench/smtp.sh
// measures the same against real peers.
func BenchmarkRelayMessage(b *testing.B) {
	addr, _ := serve(b, newFrontend(startFake(b, &fakeMTA{})))
	c := greeted(b, addr)
	c.SetDeadline(time.Time{})
	c.cmd("EHLO client.example", "250 ")
	body := "Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 16)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.mail("alice@example.org", "bob@example.net", body, "250 ")
	}
	b.StopTimer()
	c.cmd("QUIT", "221 ")
}

// BenchmarkRelaySession opens a session for each 1 KiB message, as most
// MX traffic does: greeting, EHLO, one transaction, QUIT.
func BenchmarkRelaySession(b *testing.B) {
	addr, _ := serve(b, newFrontend(startFake(b, &fakeMTA{})))
	body := "Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 16)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c := greeted(b, addr)
		c.cmd("EHLO client.example", "250 ")
		c.mail("alice@example.org", "bob@example.net", body, "250 ")
		c.cmd("QUIT", "221 ")
		c.Close()
	}
}
