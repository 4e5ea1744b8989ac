package smtp

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// postfixMaster is Postfix's master daemon, which runs in the foreground
// with -d and starts smtpd, cleanup, qmgr and smtp as mail arrives.
const postfixMaster = "/usr/lib/postfix/sbin/master"

// freePort returns a loopback port nobody listens on at the moment.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPostfix runs a private Postfix instance with its configuration and
// queue in a temporary directory: smtpd on a loopback port, XCLIENT
// allowed from 127.0.0.1 (where gatehouse dials from), and every message
// relayed on to relayTo. It is stopped when the test ends.
func startPostfix(t *testing.T, relayTo string, extra string) string {
	t.Helper()
	wiretest.NeedTool(t, postfixMaster, "postfix")
	postfixCmd := wiretest.NeedTool(t, "postfix", "postfix")
	pf, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("the postfix user is missing: apt-get install postfix (%v)", err)
	}
	dir, err := os.MkdirTemp("", "gatehouse-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // Postfix's daemons run as the postfix user
	for _, d := range []string{"queue", "data"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	uid, _ := strconv.Atoi(pf.Uid)
	os.Chown(filepath.Join(dir, "data"), uid, -1)

	// A busy machine starts Postfix slowly, and now and then the free
	// port is taken before Postfix binds it: a start that does not listen
	// within 30 s is stopped and tried again on another port, three times.
	var addr string
	for attempt := 1; ; attempt++ {
		var ok bool
		if addr, ok = runPostfixMaster(t, postfixCmd, dir, relayTo, extra); ok {
			break
		}
		if attempt == 3 {
			log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			t.Fatalf("Postfix did not listen after %d starts:\n%s", attempt, log)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			t.Logf("Postfix log:\n%s", log)
		}
	})
	return addr
}

// runPostfixMaster configures Postfix in dir for a free port, starts its
// master and waits up to 30 s for smtpd to listen; it reports the address,
// and false (the master stopped again) when nothing listened.
func runPostfixMaster(t *testing.T, postfixCmd, dir, relayTo, extra string) (string, bool) {
	t.Helper()
	port := freePort(t)
	writePostfixConfig(t, dir, port, relayTo, extra)
	if out, err := exec.Command(postfixCmd, "-c", dir, "check").CombinedOutput(); err != nil {
		t.Fatalf("postfix check: %v\n%s", err, out)
	}
	var stderr bytes.Buffer
	master := exec.Command(postfixMaster, "-c", dir, "-d")
	master.Stderr = &stderr
	if err := master.Start(); err != nil {
		t.Fatalf("start Postfix: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if !wiretest.Eventually(30*time.Second, func() bool { return canDial(addr) }) {
		t.Logf("Postfix does not listen on %s yet (%s); starting it again", addr, strings.TrimSpace(stderr.String()))
		stopProcess(master)
		return "", false
	}
	t.Cleanup(func() { stopProcess(master) })
	return addr, true
}

func writePostfixConfig(t *testing.T, dir string, port int, relayTo, extra string) {
	t.Helper()
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = backend.test
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
mynetworks = 127.0.0.0/8
relayhost = %[2]s
smtp_dns_support_level = disabled
smtpd_authorized_xclient_hosts = 127.0.0.1
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
%[3]s
`, dir, relayHost(relayTo), "")
	main = overrideSettings(main, extra)
	master, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		t.Fatalf("read Postfix's master.cf: %v (apt-get install postfix)", err)
	}
	smtpd := regexp.MustCompile(`(?m)^smtp\s+inet\s.*$`)
	cf := smtpd.ReplaceAll(master, []byte(fmt.Sprintf("127.0.0.1:%d inet n - n - - smtpd", port)))
	for name, data := range map[string][]byte{"main.cf": []byte(main), "master.cf": cf} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// overrideSettings appends extra's "name = value" lines to main, each
// replacing main's setting of the same name (Postfix warns about a
// setting given twice).
func overrideSettings(main, extra string) string {
	for line := range strings.SplitSeq(extra, "\n") {
		name, _, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(strings.TrimSpace(name)) + ` =.*\n`)
		main = re.ReplaceAllString(main, "")
	}
	return main + extra + "\n"
}

// relayHost writes "127.0.0.1:2525" as Postfix's relayhost wants it:
// "[127.0.0.1]:2525", brackets meaning no MX lookup.
func relayHost(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return "[" + host + "]:" + port
}

func canDial(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// stopProcess ends a peer: TERM, then KILL if it lingers.
func stopProcess(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// Real Postfix behind gatehouse: XCLIENT makes Postfix see the client's
// own address and HELO (its Received header says so), Postfix's replies
// to MAIL and RCPT and its queue ID in the 250 to the data reach the
// client, and so do its refusals, word for word.
func TestIntegrationPostfixXCLIENT(t *testing.T) {
	sinks, sinkAddrs := mtas(t, 1, nil)
	postfix := startPostfix(t, sinkAddrs[0],
		"smtpd_recipient_restrictions = check_recipient_access inline:{ {nobody@example.net = 550 5.1.1 No such person here} }, permit_mynetworks, reject")
	fe := newFrontend(postfix)
	fe.Config.XClient = true
	fe.Config.BackendSetupTimeout = wait
	addr, _ := serve(t, fe)

	c := dialFrom(t, "127.0.0.2", addr)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.expect("220 gate.test ")
	c.cmd("EHLO client.example", "250 ")
	// Postfix's own replies, not go-smtp's "Roger, accepting mail from".
	c.cmd("MAIL FROM:<alice@example.org>", "250 2.1.0 Ok")
	c.cmd("RCPT TO:<nobody@example.net>", "550 5.1.1 <nobody@example.net>: Recipient address rejected: No such person here")
	c.cmd("RCPT TO:<bob@example.net>", "250 2.1.5 Ok")
	ok := c.data("Subject: through Postfix\r\n\r\nHello.", "250 2.0.0 Ok: queued as ")
	c.cmd("QUIT", "221 ")

	if !wiretest.Eventually(15*time.Second, func() bool { return len(sinks[0].Messages()) == 1 }) {
		t.Fatalf("Postfix did not relay the message (accepted with %q)", ok)
	}
	data := string(sinks[0].Messages()[0].Data)
	received := regexp.MustCompile(`Received: from client\.example \(unknown \[127\.0\.0\.2\]\)\r\n\tby backend\.test \(Postfix\) with ESMTP id ([0-9A-F]+)`)
	m := received.FindStringSubmatch(data)
	if m == nil {
		t.Fatalf("Postfix's Received header does not name the client's address:\n%s", data)
	}
	if !strings.HasSuffix(ok, m[1]) {
		t.Errorf("the client was told %q, Postfix queued %s", ok, m[1])
	}
}

// Without XCLIENT, Postfix sees gatehouse's address: the test above is
// not passing by accident.
func TestIntegrationPostfixWithoutXCLIENT(t *testing.T) {
	sinks, sinkAddrs := mtas(t, 1, nil)
	fe := newFrontend(startPostfix(t, sinkAddrs[0], ""))
	fe.Config.BackendSetupTimeout = wait
	addr, _ := serve(t, fe)
	c := dialFrom(t, "127.0.0.2", addr)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.expect("220 ")
	c.cmd("EHLO client.example", "250 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 2.0.0 Ok: queued as ")
	if !wiretest.Eventually(15*time.Second, func() bool { return len(sinks[0].Messages()) == 1 }) {
		t.Fatal("Postfix did not relay the message")
	}
	if data := string(sinks[0].Messages()[0].Data); !strings.Contains(data, "[127.0.0.1])") {
		t.Fatalf("Postfix should have seen gatehouse's 127.0.0.1:\n%s", data)
	}
}

// smtp-sink, Postfix's test server, as the back-end: many messages on one
// session, each acknowledged end to end.
func TestIntegrationSmtpSink(t *testing.T) {
	sink := wiretest.NeedTool(t, "smtp-sink", "postfix")
	port := freePort(t)
	args := []string{fmt.Sprintf("127.0.0.1:%d", port), "10"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...) // it refuses to run as root
	}
	cmd := exec.Command(sink, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopProcess(cmd) })
	backend := fmt.Sprintf("127.0.0.1:%d", port)
	if !wiretest.Eventually(5*time.Second, func() bool { return canDial(backend) }) {
		t.Fatal("smtp-sink does not listen")
	}
	addr, _ := serve(t, newFrontend(backend))
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	for i := range 5 {
		c.mail("alice@example.org", "bob@example.net", fmt.Sprintf("Subject: %d\r\n\r\nHello.", i), "250 ")
	}
	c.cmd("QUIT", "221 ")
}
