package smtp

import (
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// trustingPostfix is a Postfix set up as the README says for relay
// listeners: it takes XCLIENT from gatehouse's relay address 127.0.0.1
// only, and relays for nobody but 127.0.0.1 itself, so a client that
// could pass for 127.0.0.1 would have an open relay. Clients dial from
// 127.0.0.2.
const trustingPostfix = `smtpd_authorized_xclient_hosts = 127.0.0.1
mynetworks = 127.0.0.1/32`

// openRelayAttempt sends, after EHLO, the client's own XCLIENT in the
// pipelined group given, then tries to relay to a foreign domain, and
// checks that Postfix refused the relay: the client's address was not
// replaced by the one it claimed.
func openRelayAttempt(t *testing.T, addr string, group []string, want []string) {
	t.Helper()
	c := dialFrom(t, "127.0.0.2", addr)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.expect("220 ")
	c.cmd("EHLO attacker.example", "250 ")
	c.Send(group...)
	for _, w := range want {
		c.expect(w)
	}
	if strings.HasPrefix(want[len(want)-1], "421") {
		c.expectClosed()
		return
	}
	c.cmd("EHLO attacker.example", "250 ")
	c.cmd("MAIL FROM:<spam@attacker.example>", "250 ")
	c.cmd("RCPT TO:<victim@example.net>", "554 5.7.1 <victim@example.net>: Relay access denied")
}

// Through a relay listener with xclient, a client's own XCLIENT (alone,
// or after HELP, NOOP or RSET in a pipelined group) is refused by
// gatehouse and Postfix keeps seeing the client's real address: no relay.
func TestIntegrationPostfixRelayRefusesClientXCLIENT(t *testing.T) {
	_, sinkAddrs := mtas(t, 1, nil)
	fe := newFrontend(startPostfix(t, sinkAddrs[0], trustingPostfix))
	fe.Config.XClient = true
	fe.Config.BackendSetupTimeout = wait
	addr, _ := serve(t, fe)
	claim := "XCLIENT ADDR=127.0.0.1 NAME=localhost"
	for _, tc := range []struct{ group, want []string }{
		{[]string{claim}, []string{"501 "}},
		{[]string{"HELP", claim}, []string{"502 5.5.1 ", "501 "}},
		{[]string{"NOOP", claim}, []string{"250 ", "501 "}},
		{[]string{"RSET", claim}, []string{"250 ", "501 "}},
		{[]string{"NOOP", "XFORWARD ADDR=127.0.0.1"}, []string{"250 ", "501 "}},
	} {
		t.Run(strings.Join(tc.group, "+"), func(t *testing.T) { openRelayAttempt(t, addr, tc.group, tc.want) })
	}
}

// Through a passthrough listener dialing from its own source_address,
// gatehouse refuses a client's XCLIENT before the hand-over (alone, or in
// the group that would splice after HELP, NOOP or RSET); and one sent
// after the splice, which gatehouse cannot see, reaches a Postfix that
// does not trust the passthrough address, which refuses it: no relay.
func TestIntegrationPostfixPassthroughRefusesClientXCLIENT(t *testing.T) {
	_, sinkAddrs := mtas(t, 1, nil)
	fe := newFrontend(startPostfix(t, sinkAddrs[0], trustingPostfix))
	fe.Config.Mode = ModePassthrough
	fe.Config.SourceAddress = "127.0.0.3"
	fe.Config.BackendSetupTimeout = wait
	addr, _ := serve(t, fe)
	claim := "XCLIENT ADDR=127.0.0.1 NAME=localhost"
	for _, tc := range []struct{ group, want []string }{
		{[]string{claim}, []string{"550 5.7.0 XCLIENT is not permitted"}},
		{[]string{"NOOP", claim}, []string{"250 ", "550 5.7.0 "}},
		{[]string{"RSET", claim}, []string{"250 ", "550 5.7.0 "}},
		{[]string{"HELP", claim}, []string{"550 5.7.0 ", "421 4.7.0 "}},
		{[]string{"HELP", "XFORWARD ADDR=127.0.0.1"}, []string{"550 5.7.0 ", "421 4.7.0 "}},
		// Spliced by HELP, which Postfix does not know.
		{[]string{"HELP"}, []string{"500 5.5.2 Error: command not recognized"}},
	} {
		t.Run(strings.Join(tc.group, "+"), func(t *testing.T) { openRelayAttempt(t, addr, tc.group, tc.want) })
	}
	t.Run("after the splice", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.2", addr)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.expect("220 ")
		c.cmd("EHLO attacker.example", "250 ")
		c.cmd("HELP", "500 5.5.2 ")
		c.cmd(claim, "550 5.7.0 Error: insufficient authorization")
		c.cmd("MAIL FROM:<spam@attacker.example>", "250 ")
		c.cmd("RCPT TO:<victim@example.net>", "554 5.7.1 <victim@example.net>: Relay access denied")
	})
}

// With xclient, a back-end that never greets costs the client the
// greeting timeout, a Postfix that does not offer XCLIENT to gatehouse is
// skipped, and the one that trusts gatehouse takes the message with the
// client's own address; with only untrusting back-ends the client gets
// 421, never a session under gatehouse's address.
func TestIntegrationPostfixXCLIENTFailsClosed(t *testing.T) {
	sinks, sinkAddrs := mtas(t, 1, nil)
	untrusting := startPostfix(t, sinkAddrs[0], "smtpd_authorized_xclient_hosts =\nmynetworks = 127.0.0.0/8")
	trusting := startPostfix(t, sinkAddrs[0], "smtpd_authorized_xclient_hosts = 127.0.0.1\nmynetworks = 127.0.0.0/8")
	fe := newFrontend(tarpit(t), untrusting, trusting)
	fe.Config.XClient = true
	fe.Config.BackendSetupTimeout = time.Minute
	fe.Config.BackendGreetingTimeout = time.Second
	addr, _ := serve(t, fe)

	start := time.Now()
	c := dialFrom(t, "127.0.0.2", addr)
	c.SetDeadline(time.Now().Add(40 * time.Second))
	c.expect("220 gate.test ")
	if d := time.Since(start); d >= fe.Config.BackendSetupTimeout {
		t.Errorf("greeted after %v, the setup timeout", d)
	}
	c.cmd("EHLO client.example", "250 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 2.0.0 Ok: queued as ")
	c.cmd("QUIT", "221 ")
	if !wiretest.Eventually(15*time.Second, func() bool { return len(sinks[0].Messages()) == 1 }) {
		t.Fatal("Postfix did not relay the message")
	}
	if data := string(sinks[0].Messages()[0].Data); !strings.Contains(data, "[127.0.0.2])") {
		t.Fatalf("the message did not go through XCLIENT with the client's address:\n%s", data)
	}

	fe = newFrontend(untrusting)
	fe.Config.XClient = true
	fe.Config.BackendSetupTimeout = wait
	addr, _ = serve(t, fe)
	c = dialFrom(t, "127.0.0.2", addr)
	c.expect("421 4.3.2 gate.test No mail server available")
	c.expectClosed()
}

// 150 idle connections from one address, at the SMTP listeners' default
// max_per_ip of 50, leave Postfix's 100 smtpd processes room for another
// client, which is served; the excess is refused with 421.
func TestIntegrationPostfixIdleFlood(t *testing.T) {
	_, sinkAddrs := mtas(t, 1, nil)
	postfix := startPostfix(t, sinkAddrs[0], "")
	fe := newFrontend(postfix)
	fe.Config.BackendSetupTimeout = wait
	// The idle clients must stay for the whole flood, which on a busy
	// machine outlasts the tests' short command timeout: a client timed
	// out would free its slot for one more.
	fe.Config.CommandTimeout = time.Minute
	fe.Config.HelloTimeout = time.Minute
	addr, _ := serveWith(t, &proxy.Server{Name: "smtp-test", Handler: fe, Log: quiet, MaxPerIP: 50})

	greetedN, refused := 0, 0
	for range 150 {
		c := dialFrom(t, "127.0.0.2", addr)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		switch r := c.Reply(); {
		case strings.HasPrefix(r[0], "220 "):
			greetedN++
		case strings.HasPrefix(r[0], "421 4.7.0 "):
			refused++
		default:
			t.Fatalf("idle client got %q", r)
		}
	}
	if greetedN != 50 || refused != 100 {
		t.Errorf("%d greeted, %d refused; want 50 and 100", greetedN, refused)
	}
	c := dialFrom(t, "127.0.0.3", addr)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.expect("220 gate.test ")
	c.cmd("EHLO other.example", "250 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 2.0.0 Ok: queued as ")
	c.cmd("QUIT", "221 ")
}
