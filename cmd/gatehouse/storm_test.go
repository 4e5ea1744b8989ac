package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/gatehouse-proxy/gatehouse/protocols/pop3/pop3test"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
)

// buildBinary builds the gatehouse binary once for tests that run it as an
// operator would.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "gatehouse-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "gatehouse")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// clientLoad runs one kind of client session in a loop until stop and
// counts what it tried and what failed.
type clientLoad struct {
	name          string
	tried, failed atomic.Int64
	lastErr       atomic.Value
}

func (c *clientLoad) run(stop <-chan struct{}, wg *sync.WaitGroup, session func() error) {
	defer wg.Done()
	for {
		select {
		case <-stop:
			return
		default:
		}
		c.tried.Add(1)
		if err := session(); err != nil {
			c.failed.Add(1)
			c.lastErr.Store(err.Error())
		}
	}
}

// A SIGHUP storm under load — pairs of back-to-back SIGHUPs plus an API
// reload five times a second for ten seconds, while SMTP, POP3 and HTTPS
// clients keep working through the binary — fails no session, and every
// listener still accepts afterwards.
func TestSIGHUPStormFailsNoSession(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	mx := smtptest.NewServer("mx")
	defer mx.Close()
	pop := pop3test.NewUnstartedServer("pop")
	msg := [][]byte{[]byte("Subject: hi\r\n\r\nhello\r\n")}
	// One mailbox per POP3 client: a maildrop is locked while a session has it.
	pop.Mailboxes = map[string]*pop3test.Mailbox{"alice": {Password: "secret", Messages: msg}, "bob": {Password: "secret", Messages: msg}}
	pop.Start()
	defer pop.Close()
	cas := exchangetest.NewServer("cas")
	defer cas.Close()
	smtpAddr, popAddr, httpAddr := wiretest.FreeAddr(t), wiretest.FreeAddr(t), wiretest.FreeAddr(t)
	adminAddr := wiretest.FreeAddr(t)
	dir := t.TempDir()
	path, pidfile := filepath.Join(dir, "gatehouse.yaml"), filepath.Join(dir, "pid")
	os.WriteFile(path, fmt.Appendf(nil, `
state_dir: %q
admin: {listen: %q}
log: {level: warn}
shutdown_grace: 1s
backends: {mx: {address: %q}, pop: {address: %q}, cas: {address: %q}}
listeners:
  - {name: smtp, protocol: smtp, listen: %q, backends: [mx]}
  - {name: pop3, protocol: pop3, listen: %q, backends: [pop]}
  - {name: https, protocol: https, listen: %q, backends: [cas]}
`, dir, adminAddr, mx.Addr, pop.Addr, cas.Addr, smtpAddr, popAddr, httpAddr), 0o644)
	cmd := exec.Command(bin, "run", "-config", path, "-pidfile", pidfile)
	var logs strings.Builder
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("gatehouse's log:\n%s", logs.String())
		}
	}()
	waitListening(t, smtpAddr, popAddr, httpAddr, adminAddr)

	loads := []*clientLoad{{name: "smtp"}, {name: "pop3"}, {name: "https"}}
	sessions := []func(user string) error{
		func(string) error { return smtpSession(smtpAddr) },
		func(user string) error { return pop3Session(popAddr, user) },
		func(string) error { return httpSession(httpAddr) },
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, l := range loads {
		for _, user := range []string{"alice", "bob"} {
			wg.Add(1)
			go l.run(stop, &wg, func() error { return sessions[i](user) })
		}
	}
	// Fifty ticks, each a pair of back-to-back SIGHUPs and an API reload
	// at the same moment: 10 reloads a second for 10 s, and more.
	apiReloads := 0
	for range 50 {
		time.Sleep(200 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGHUP)
		cmd.Process.Signal(syscall.SIGHUP)
		if code := apiReload(adminAddr, ""); code == 0 {
			apiReloads++
		}
	}
	close(stop)
	if apiReloads != 50 {
		t.Errorf("%d of 50 API reloads succeeded", apiReloads)
	}
	// Every listener still accepts: no reload lost a socket.
	if err := smtpSession(smtpAddr); err != nil {
		t.Errorf("smtp after the storm: %v", err)
	}
	if err := pop3Session(popAddr, "alice"); err != nil {
		t.Errorf("pop3 after the storm: %v", err)
	}
	if err := httpSession(httpAddr); err != nil {
		t.Errorf("https after the storm: %v", err)
	}
	wg.Wait()
	for _, l := range loads {
		t.Logf("%s: %d sessions tried across 100 SIGHUPs and 50 API reloads, %d failed", l.name, l.tried.Load(), l.failed.Load())
		if l.failed.Load() != 0 {
			t.Errorf("%s: %d of %d sessions failed; last: %v", l.name, l.failed.Load(), l.tried.Load(), l.lastErr.Load())
		}
		if l.tried.Load() < 10 {
			t.Errorf("%s: only %d sessions tried", l.name, l.tried.Load())
		}
	}
}

func waitListening(t *testing.T, addrs ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gatehouse does not listen on %s", a)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// dialog is a line-protocol client session with a deadline.
type dialog struct {
	c  net.Conn
	br *bufio.Reader
}

func dialDialog(addr string) (*dialog, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &dialog{c, bufio.NewReader(c)}, nil
}

// step sends line (unless empty) and reads replies until one starting with
// want; a reply starting otherwise (and not a continuation) is an error.
func (d *dialog) step(line, want string) error {
	if line != "" {
		if _, err := fmt.Fprintf(d.c, "%s\r\n", line); err != nil {
			return err
		}
	}
	for {
		s, err := d.br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("after %q: %w", line, err)
		}
		if strings.HasPrefix(s, want) {
			return nil
		}
		if len(s) > 3 && s[3] == '-' { // an SMTP continuation line
			continue
		}
		if strings.HasPrefix(s, "* ") && !strings.HasPrefix(want, "*") { // an untagged IMAP reply
			continue
		}
		return fmt.Errorf("after %q: %q", line, s)
	}
}

func smtpSession(addr string) error {
	d, err := dialDialog(addr)
	if err != nil {
		return err
	}
	defer d.c.Close()
	for _, st := range [][2]string{{"", "220 "}, {"EHLO client.example", "250 "}, {"MAIL FROM:<a@client.example>", "250 "},
		{"RCPT TO:<b@example.com>", "250 "}, {"DATA", "354 "}, {"Subject: storm\r\n\r\nhi\r\n.", "250 "}, {"QUIT", "221 "}} {
		if err := d.step(st[0], st[1]); err != nil {
			return err
		}
	}
	return nil
}

func pop3Session(addr, user string) error {
	d, err := dialDialog(addr)
	if err != nil {
		return err
	}
	defer d.c.Close()
	for _, st := range [][2]string{{"", "+OK"}, {"USER " + user, "+OK"}, {"PASS secret", "+OK"}, {"STAT", "+OK 1 "}, {"QUIT", "+OK"}} {
		if err := d.step(st[0], st[1]); err != nil {
			return err
		}
	}
	return nil
}

func httpSession(addr string) error {
	client := &http.Client{Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	for range 3 { // keep-alive: three requests on one connection
		resp, err := client.Get("http://" + addr + "/owa/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET /owa/: %s", resp.Status)
		}
	}
	return nil
}
