package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/dovecottest"
	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
	"github.com/gatehouse-proxy/gatehouse/upgrade"
)

// copyFile copies a file with mode 0755 (removing what was there, as a
// package manager replaces a running binary).
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(to)
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// A binary upgrade keeps every live session in the old process (a
// spliced TCP session, an SMTP relay session mid-way, an IMAP IDLE through
// Dovecot, a held ActiveSync Ping), hands
// every port (the admin one too) to the new process without refusing a
// connection, and a new binary that cannot start leaves the old one
// serving.
func TestUpgradeKeepsSessionsAndSurvivesABrokenBinary(t *testing.T) {
	built, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "gatehouse")
	copyFile(t, built, bin)
	echo := startEcho(t)
	mx := smtptest.NewServer("mx")
	defer mx.Close()
	dovecot := dovecottest.Start(t, "imap", "alice")
	cas := exchangetest.NewUnstartedServer("cas")
	cas.PingHold = 15 * time.Second
	cas.Start()
	defer cas.Close()
	tcpAddr, smtpAddr, adminAddr := wiretest.FreeAddr(t), wiretest.FreeAddr(t), wiretest.FreeAddr(t)
	imapAddr, httpsAddr := wiretest.FreeAddr(t), wiretest.FreeAddr(t)
	path, pidfile := filepath.Join(dir, "gatehouse.yaml"), filepath.Join(dir, "pid")
	os.WriteFile(path, fmt.Appendf(nil, `
state_dir: %q
admin: {listen: %q}
log: {level: info}
backends: {echo: {address: %q}, mx: {address: %q}, imap: {address: %q}, cas: {address: %q}}
listeners:
  - {name: tcp, listen: %q, backends: [echo]}
  - {name: smtp, protocol: smtp, listen: %q, backends: [mx]}
  - {name: imap, protocol: imap, listen: %q, backends: [imap]}
  - {name: https, protocol: https, listen: %q, backends: [cas]}
`, dir, adminAddr, echo, mx.Addr, dovecot.IMAP, cas.Addr, tcpAddr, smtpAddr, imapAddr, httpsAddr), 0o644)
	logFile, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	notes := systemdNotifySocket(t, filepath.Join(dir, "notify"))
	cmd := exec.Command(bin, "run", "-config", path, "-pidfile", pidfile)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+filepath.Join(dir, "notify"))
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		if pid, err := upgrade.PID(pidfile); err == nil {
			syscall.Kill(pid, syscall.SIGTERM)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			t.Error("the old process ignored SIGTERM; its goroutines are in the log")
			cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("gatehouse's log:\n%s", b)
		}
	}()
	waitListening(t, tcpAddr, smtpAddr, adminAddr, imapAddr, httpsAddr)
	waitPidfile(t, pidfile, cmd.Process.Pid)

	tcp, err := dialDialog(tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.c.Close()
	mail, err := dialDialog(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer mail.c.Close()
	must(t, mail.step("", "220 "), mail.step("EHLO client.example", "250 "), tcp.step("one", "one"))
	imap, err := dialDialog(imapAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer imap.c.Close()
	must(t, imap.step("", "* OK"), imap.step("a LOGIN alice demo", "a OK"), imap.step("b SELECT INBOX", "b OK"), imap.step("c IDLE", "+ "))
	ping, err := dialDialog(httpsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ping.c.Close()
	ping.c.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(ping.c, "POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=dev1&DeviceType=iPhone HTTP/1.1\r\n"+
		"Host: mail.example.com\r\nMS-ASProtocolVersion: 14.1\r\nContent-Length: 6\r\n\r\n<Ping>")
	if !wiretest.Eventually(10*time.Second, func() bool { return cas.HeldPings() == 1 }) {
		t.Fatal("the Ping is not held")
	}

	// A binary that cannot start: the old process keeps serving.
	os.Remove(bin)
	os.WriteFile(bin, []byte("#!/bin/sh\nexit 3\n"), 0o755)
	began := time.Now()
	if code := cmdUpgrade([]string{"-pidfile", pidfile, "-wait", "60s"}); code != 1 {
		t.Fatalf("upgrade to a broken binary: exit %d, want 1", code)
	}
	if waited := time.Since(began); waited > 30*time.Second { // the failure is reported, not waited out
		t.Errorf("gatehouse upgrade took %s to report a binary that exited at once", waited)
	}
	must(t, tcp.step("two", "two"), smtpSession(smtpAddr))

	// The real binary: the new process takes every port over.
	copyFile(t, built, bin)
	if code := cmdUpgrade([]string{"-pidfile", pidfile, "-wait", "60s"}); code != 0 {
		t.Fatalf("upgrade: exit %d", code)
	}
	newPid, _ := upgrade.PID(pidfile)
	if newPid == cmd.Process.Pid {
		t.Fatal("the pidfile still names the old process")
	}
	// systemd (Type=notify, NotifyAccess=all) follows the new process.
	if !wiretest.Eventually(10*time.Second, func() bool { return notes.has(fmt.Sprintf("MAINPID=%d\nREADY=1", newPid)) }) {
		t.Errorf("systemd was not told the new main PID; it heard %q", notes.all())
	}
	must(t, smtpSession(smtpAddr), statusOK(adminAddr))
	fresh, err := dialDialog(tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	must(t, fresh.step("fresh", "fresh"))
	fresh.c.Close()

	// The old process still carries the sessions it had, untouched.
	if n := cas.HeldPings(); n != 1 {
		t.Fatalf("%d Pings held after the upgrade, want the one from before", n)
	}
	select {
	case <-exited:
		t.Fatal("the old process exited with live sessions")
	default:
	}
	must(t, tcp.step("three", "three"),
		mail.step("MAIL FROM:<a@client.example>", "250 "), mail.step("RCPT TO:<b@example.com>", "250 "),
		mail.step("DATA", "354 "), mail.step("Subject: x\r\n\r\nacross an upgrade\r\n.", "250 "), mail.step("QUIT", "221 "))
	must(t, imap.step("DONE", "c OK"), imap.step("d LOGOUT", "* BYE"))
	resp, err := http.ReadResponse(ping.br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the Ping held across the upgrade: %v %v", resp, err)
	}
	tcp.c.Close()
	imap.c.Close()
	ping.c.Close()
	select {
	case <-exited: // its last session ended: it is gone
	case <-time.After(20 * time.Second):
		t.Fatal("the old process did not exit after its last session ended")
	}
	must(t, smtpSession(smtpAddr))
}

func must(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func waitPidfile(t *testing.T, pidfile string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pid, err := upgrade.PID(pidfile); err == nil && pid == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pidfile %s does not name %d", pidfile, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func statusOK(admin string) error {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + admin + "/api/status")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("admin /api/status: %s", resp.Status)
	}
	return nil
}

// startEcho runs a line echo server and returns its address.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// notifications are what gatehouse told a systemd notify socket.
type notifications struct {
	mu   sync.Mutex
	msgs []string
}

func (n *notifications) has(s string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Contains(n.msgs, s)
}

func (n *notifications) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.msgs)
}

// systemdNotifySocket listens where systemd's NOTIFY_SOCKET would be and
// records every datagram, as systemd does for a Type=notify service.
func systemdNotifySocket(t *testing.T, path string) *notifications {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n := &notifications{}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}
