package wiretest

import (
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLogsLinesKeepsOnlyMatchingRecordsAtLevel(t *testing.T) {
	var logs Logs
	log := logs.Logger(slog.LevelInfo)
	log.Debug("session", "n", 0) // below the level: not written
	log.Info("session", "n", 1)
	log.Info("other", "n", 2)
	log.Warn("session", "n", 3)
	got := logs.Lines("msg=session")
	if len(got) != 2 || !strings.HasSuffix(got[0], "n=1") || !strings.HasSuffix(got[1], "n=3") {
		t.Fatalf("Lines(msg=session) = %q, want the records n=1 and n=3", got)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	if !Eventually(time.Second, func() bool { n++; return n == 3 }) || n != 3 {
		t.Fatalf("Eventually stopped after %d polls, want true on the third", n)
	}
	if Eventually(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("Eventually held for a condition that never does")
	}
}

func TestNewCertificateIsFreshAndNamed(t *testing.T) {
	a, b := NewCertificate(t, "mail.example.com", "mail.example.com"), NewCertificate(t, "mail.example.com")
	leafA, err := x509.ParseCertificate(a.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	leafB, err := x509.ParseCertificate(b.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leafA.SerialNumber.Cmp(leafB.SerialNumber) == 0 {
		t.Errorf("two certificates share the serial number %v", leafA.SerialNumber)
	}
	if err := leafA.VerifyHostname("mail.example.com"); err != nil {
		t.Error(err)
	}
	if err := leafA.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
}

func TestCertificateIsMadeOnceForLocalhost(t *testing.T) {
	leaf, err := x509.ParseCertificate(Certificate().Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "gatehouse test" || leaf.SerialNumber.Int64() != 1 || leaf.VerifyHostname("localhost") != nil {
		t.Fatalf("Certificate() is %q serial %v for %v", leaf.Subject.CommonName, leaf.SerialNumber, leaf.DNSNames)
	}
	if &Certificate().Certificate[0][0] != &Certificate().Certificate[0][0] {
		t.Fatal("Certificate() made a second certificate")
	}
}

func TestReplyReadsContinuationLines(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	go func() { io.WriteString(server, "250-gate.test\r\n250-SIZE 10\r\n250 8BITMIME\r\n220 next\r\n") }()
	c := NewConn(t, client)
	client.SetDeadline(time.Now().Add(Wait))
	if got := c.Reply(); !slices.Equal(got, []string{"250-gate.test", "250-SIZE 10", "250 8BITMIME"}) {
		t.Fatalf("Reply() = %q, want the three lines of the EHLO reply", got)
	}
	if got := c.Reply(); !slices.Equal(got, []string{"220 next"}) {
		t.Fatalf("second Reply() = %q, want the next reply alone", got)
	}
}
