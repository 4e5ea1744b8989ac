// Package dovecottest runs real Dovecot instances for tests: each on its
// own loopback ports, with its own configuration, passwd-file users
// (password "demo") and Maildirs, stopped when the test ends.
//
// It may import internal/wiretest; tests of any package may import it.
package dovecottest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// Server is a Dovecot instance a test runs on loopback ports.
type Server struct {
	// Name names the instance; each user's first message says it.
	Name string
	// POP3 and IMAP are plain listeners; POP3Proxy and IMAPProxy want a
	// PROXY header (haproxy = yes).
	POP3, IMAP, POP3Proxy, IMAPProxy string
	dir                              string
}

// mailUID owns the Maildirs: Dovecot refuses to serve mail as root.
const mailUID = 65534

// Start runs Dovecot with the given users, each with one message whose
// subject is "<user> on <name>", until the test ends. It fails the test,
// naming the Debian packages, when Dovecot is not installed.
func Start(t testing.TB, name string, users ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		t.Fatalf("dovecot not found (%v): install the Debian packages dovecot-core, dovecot-pop3d and dovecot-imapd", err)
	}
	// A short path: Dovecot's unix sockets must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "gh-dv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	d := &Server{Name: name, dir: dir, POP3: wiretest.FreeAddr(t), IMAP: wiretest.FreeAddr(t), POP3Proxy: wiretest.FreeAddr(t), IMAPProxy: wiretest.FreeAddr(t)}
	for _, u := range users {
		d.AddMessage(t, u, "Subject: "+u+" on "+name+"\r\n\r\nhello from "+name+"\r\n")
	}
	wiretest.WriteFile(t, filepath.Join(dir, "passwd"), passwdFile(users))
	wiretest.WriteFile(t, filepath.Join(dir, "dovecot.conf"), d.config())
	cmd := exec.Command(bin, "-F", "-c", filepath.Join(dir, "dovecot.conf"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dovecot: %v", err)
	}
	t.Cleanup(func() { stopProcess(cmd) })
	if err := waitGreeting(d.POP3, "+OK"); err != nil {
		t.Fatalf("dovecot %s did not come up: %v\n%s\n%s", name, err, out.String(), d.Log())
	}
	return d
}

// AddMessage delivers a message to user's Maildir (new/), as an MDA would.
func (d *Server) AddMessage(t testing.TB, user, msg string) {
	t.Helper()
	home := filepath.Join(d.dir, "mail", user)
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(home, "Maildir", sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	name := fmt.Sprintf("%d.M%dP1.gatehouse", time.Now().UnixNano(), len(msg))
	wiretest.WriteFile(t, filepath.Join(home, "Maildir", "new", name), msg)
	filepath.Walk(filepath.Join(d.dir, "mail"), func(p string, _ os.FileInfo, _ error) error {
		return os.Chown(p, mailUID, mailUID)
	})
}

// Log returns what Dovecot has logged so far.
func (d *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
	return string(b)
}

// WaitLog waits up to wiretest.Wait until Dovecot's log holds s, and fails
// the test, showing the log, if it never does.
func (d *Server) WaitLog(t testing.TB, s string) {
	t.Helper()
	for deadline := time.Now().Add(wiretest.Wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(d.Log(), s) {
			return
		}
	}
	t.Fatalf("dovecot %s never logged %q; its log:\n%s", d.Name, s, d.Log())
}

func (d *Server) config() string {
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	return fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
instance_name = gatehouse-%[2]s-%[3]s
protocols = imap pop3
listen = 127.0.0.1
log_path = %[1]s/dovecot.log
auth_verbose = yes
auth_failure_delay = 0
disable_plaintext_auth = no
ssl = no
mail_location = maildir:~/Maildir
login_trusted_networks = 127.0.0.0/8
haproxy_trusted_networks = 127.0.0.0/8
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[1]s/passwd
}
userdb {
  driver = static
  args = uid=%[8]d gid=%[8]d home=%[1]s/mail/%%u
}
service pop3-login {
  inet_listener pop3 {
    port = %[4]s
  }
  inet_listener pop3-proxied {
    port = %[6]s
    haproxy = yes
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    port = %[5]s
  }
  inet_listener imap-proxied {
    port = %[7]s
    haproxy = yes
  }
  inet_listener imaps {
    port = 0
  }
}
`, d.dir, d.Name, filepath.Base(d.dir), port(d.POP3), port(d.IMAP), port(d.POP3Proxy), port(d.IMAPProxy), mailUID)
}

func passwdFile(users []string) string {
	var b strings.Builder
	for _, u := range users {
		b.WriteString(u + ":{PLAIN}demo\n")
	}
	return b.String()
}

// waitGreeting polls addr until a server there greets with prefix.
func waitGreeting(addr, prefix string) error {
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, time.Second); err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 256)
		n, rerr := c.Read(buf)
		c.Close()
		if rerr == nil && strings.HasPrefix(string(buf[:n]), prefix) {
			return nil
		}
		err = fmt.Errorf("greeting %q, %v", buf[:n], rerr)
	}
	return err
}

// stopProcess ends Dovecot: SIGTERM, then SIGKILL.
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
