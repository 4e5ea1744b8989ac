package smtp

import (
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pires/go-proxyproto"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// XCLIENT tells a back-end that offers it who the client is (address,
// port, the address it reached) before the client is greeted; the
// client's own EHLO then names it.
func TestXClient(t *testing.T) {
	fake := &fakeMTA{Extensions: []string{"XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT", "8BITMIME"}}
	fe := newFrontend(startFake(t, fake))
	fe.Config.XClient = true
	addr, _ := serve(t, fe)
	c := dialFrom(t, "127.0.0.2", addr)
	c.expect("220 ")
	ehlo := c.cmd("EHLO client.example", "250 ")
	if strings.Contains(ehlo, "XCLIENT") {
		t.Errorf("XCLIENT offered to the client:\n%s", ehlo)
	}
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")

	cmds := fake.commands()
	port := c.LocalAddr().(*net.TCPAddr).Port
	_, gwPort, _ := net.SplitHostPort(addr)
	want := "XCLIENT PROTO=ESMTP DESTADDR=127.0.0.1 DESTPORT=" + gwPort +
		" PORT=" + strconv.Itoa(port) + " NAME=[UNAVAILABLE] ADDR=127.0.0.2"
	if len(cmds) < 3 || cmds[0] != "EHLO gate.test" || cmds[1] != want || cmds[2] != "EHLO client.example" {
		t.Fatalf("back-end got\n%q\nwant EHLO gate.test, %q, EHLO client.example first", cmds, want)
	}
}

// xclient fails closed: a back-end that refuses XCLIENT, or does not
// offer it to gatehouse, is skipped (logged) for the next; with none left
// the client hears 421 4.3.2, never a session under gatehouse's address.
func TestXClientFailsClosed(t *testing.T) {
	refusing := &fakeMTA{
		Extensions: []string{"XCLIENT ADDR", "8BITMIME"},
		Replies:    map[string]string{"XCLIENT": "550 5.7.0 Insufficient authorization"},
	}
	absent := &fakeMTA{Extensions: []string{"8BITMIME"}}
	trusting := &fakeMTA{Extensions: []string{"XCLIENT ADDR", "8BITMIME"}}
	var logs wiretest.Logs
	fe := newFrontend(startFake(t, refusing), startFake(t, absent), startFake(t, trusting))
	fe.Config.XClient = true
	fe.Log = logs.Logger(slog.LevelWarn)
	addr, _ := serve(t, fe)
	c := dialFrom(t, "127.0.0.2", addr)
	c.expect("220 gate.test ")
	c.cmd("EHLO client.example", "250 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
	if refusing.hasCommand("MAIL") || absent.hasCommand("MAIL") || !trusting.hasCommand("XCLIENT ADDR=127.0.0.2") {
		t.Fatalf("the message went elsewhere than the back-end that took XCLIENT: %q %q %q",
			refusing.commands(), absent.commands(), trusting.commands())
	}
	if len(logs.Lines("XCLIENT refused")) != 1 || len(logs.Lines("XCLIENT not offered")) != 1 {
		t.Errorf("want one log line per skipped back-end:\n%s", logs.String())
	}

	refusing2 := &fakeMTA{Extensions: refusing.Extensions, Replies: refusing.Replies}
	fe = newFrontend(startFake(t, refusing2), startFake(t, &fakeMTA{Extensions: absent.Extensions}))
	fe.Config.XClient = true
	addr, _ = serve(t, fe)
	c = dial(t, addr)
	c.expect("421 4.3.2 gate.test No mail server available")
	c.expectClosed()
}

// A PROXY header names the client to a back-end that reads them.
func TestProxyHeaderToBackend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mta := smtptest.NewUnstartedServer("b1")
	mta.StartOn(&proxyproto.Listener{Listener: ln, ReadHeaderTimeout: wait})
	t.Cleanup(mta.Close)
	fe := newFrontend(mta.Addr)
	fe.ProxyVersion = 2
	addr, _ := serve(t, fe)

	c := dialFrom(t, "127.0.0.2", addr)
	c.expect("220 ")
	c.cmd("EHLO client.example", "250 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
	msgs := mta.Messages()
	if len(msgs) != 1 || msgs[0].RemoteAddr != c.LocalAddr().String() {
		t.Fatalf("back-end got %+v, want a message from %s", msgs, c.LocalAddr())
	}
}

// The Received header names the client's HELO and real address and the
// TLS it spoke at the edge, before the message's own first line.
func TestReceivedHeader(t *testing.T) {
	backends, addrs := mtas(t, 1, nil)
	fe := newFrontend(addrs...)
	fe.TLSMode, fe.EdgeTLS = proxy.TLSStartTLS, wiretest.ServerTLS()
	fe.Config.ReceivedHeader = true
	addr, _ := serve(t, fe)
	c := dialFrom(t, "127.0.0.2", addr)
	c.expect("220 ")
	c.cmd("EHLO client.example", "250 ")
	c.startTLS()
	c.cmd("EHLO client.example", "250 ")
	c.mail("alice@example.org", "bob@example.net", "Subject: hi\r\n\r\nHello.", "250 ")

	msgs := backends[0].Messages()
	if len(msgs) != 1 {
		t.Fatalf("back-end got %d messages", len(msgs))
	}
	header := regexp.MustCompile(`^Received: from client\.example \(\[127\.0\.0\.2\]\)\r\n` +
		`\tby gate\.test \(gatehouse\) with ESMTPS \(TLS 1\.3 with cipher TLS_[A-Z0-9_]+\)\r\n` +
		`\tid [0-9a-f]{8}; [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}\r\n` +
		`Subject: hi\r\n`)
	if !header.Match(msgs[0].Data) {
		t.Fatalf("message begins\n%q", msgs[0].Data[:min(len(msgs[0].Data), 300)])
	}
}

// headerWord keeps a hostile HELO name from breaking out of the header.
func TestHeaderWord(t *testing.T) {
	for in, want := range map[string]string{
		"mail.example":           "mail.example",
		"evil)\r\nBcc: x (":      "evil___Bcc:_x__",
		"":                       "unknown",
		"\\(comment)":            "__comment_",
		strings.Repeat("a", 300): strings.Repeat("a", 255),
	} {
		if got := headerWord(in); got != want {
			t.Errorf("headerWord(%q) = %q, want %q", in, got, want)
		}
	}
}
