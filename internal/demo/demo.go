// Package demo runs the demo back-ends of `gatehouse demo`: for each
// listener of examples/demo.yaml, one test server of the listener's kind
// per back-end (SMTP, POP3, IMAP, Exchange HTTPS), and the banner that
// tells a newcomer what to try. It lives apart from the gatehouse package
// so that the library links no test back-end; only cmd/gatehouse imports
// it. It may import the gatehouse package and the protocols' test servers.
package demo

import (
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gatehouse-proxy/gatehouse"

	"github.com/gatehouse-proxy/gatehouse/config"
	"github.com/gatehouse-proxy/gatehouse/protocols/https/exchangetest"
	"github.com/gatehouse-proxy/gatehouse/protocols/imap/imaptest"
	"github.com/gatehouse-proxy/gatehouse/protocols/pop3/pop3test"
	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
)

// Password is the password of the demo users alice and bob.
const Password = "demo"

// demoHomes says which demo back-end holds each demo user's mailbox: they
// live on different servers, as mailboxes do in a real farm.
var demoHomes = map[string]string{"alice": "demo-a", "bob": "demo-b"}

// Backends are the demo back-end servers `gatehouse demo` runs.
type Backends struct {
	closers []func()
}

// Start starts, for every listener of the demo config, one
// demo server of the listener's kind per back-end, at the back-end's
// address. The kind comes from the listener's name: smtp, pop3, imap or
// https.
func Start(cfg *config.Config) (*Backends, error) {
	if err := writeDemoMap(cfg); err != nil {
		return nil, err
	}
	d := &Backends{}
	for _, l := range cfg.Listeners {
		for _, name := range l.Backends {
			addr := gatehouse.BackendAddr(cfg.Backends[name].Address, l.Port)
			if err := d.start(l.Name, name, addr); err != nil {
				d.Close()
				return nil, err
			}
		}
	}
	return d, nil
}

// start runs one demo server of the given kind, named after its back-end.
func (d *Backends) start(kind, name, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("demo back-end %s (%s): %w", name, kind, err)
	}
	switch kind {
	case "smtp":
		s := smtptest.NewUnstartedServer(name)
		s.StartOn(ln)
		d.closers = append(d.closers, s.Close)
	case "pop3":
		s := pop3test.NewUnstartedServer(name)
		s.Mailboxes = map[string]*pop3test.Mailbox{}
		for user, msgs := range demoMailboxes(name) {
			s.Mailboxes[user] = &pop3test.Mailbox{Password: Password, Messages: msgs}
		}
		s.StartOn(ln)
		d.closers = append(d.closers, s.Close)
	case "imap":
		s := imaptest.NewUnstartedServer(name)
		for user, msgs := range demoMailboxes(name) {
			s.AddUser(user, Password, msgs...)
		}
		s.StartOn(ln)
		d.closers = append(d.closers, s.Close)
	case "https":
		s := exchangetest.NewUnstartedServer(name)
		s.StartTLSOn(ln)
		d.closers = append(d.closers, s.Close)
	default:
		ln.Close()
		return fmt.Errorf("no demo back-end for listener %q", kind)
	}
	return nil
}

// writeDemoMap writes the demo's mailbox map where its listeners look for
// it, unless it is there already (an edit, moving a mailbox, survives
// restarts).
func writeDemoMap(cfg *config.Config) error {
	for _, l := range cfg.Listeners {
		if l.Route.File == "" {
			continue
		}
		if _, err := os.Stat(l.Route.File); err == nil {
			continue
		}
		var b strings.Builder
		b.WriteString("# user  back-end   (edit to move a mailbox; the next login follows)\n")
		for _, user := range slices.Sorted(maps.Keys(demoHomes)) {
			fmt.Fprintf(&b, "%s %s\n", user, demoHomes[user])
		}
		if err := os.MkdirAll(filepath.Dir(l.Route.File), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(l.Route.File, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// demoMailboxes returns the mailboxes a demo back-end holds.
func demoMailboxes(backend string) map[string][][]byte {
	boxes := map[string][][]byte{}
	for user, home := range demoHomes {
		if home != backend {
			continue
		}
		boxes[user] = [][]byte{
			demoMessage(user, backend, "Welcome to gatehouse", "This mailbox lives on "+backend+"."),
			demoMessage(user, backend, "Second message", "Moving a mailbox is one line in a map file."),
		}
	}
	return boxes
}

func demoMessage(user, backend, subject, body string) []byte {
	return []byte(strings.Join([]string{
		"From: postmaster@example.com",
		"To: " + user + "@example.com",
		"Subject: " + subject,
		"Message-ID: <" + strings.ReplaceAll(strings.ToLower(subject), " ", "-") + "." + user + "@" + backend + ".example.com>",
		"",
		body,
		"",
	}, "\r\n"))
}

// Close stops every demo back-end.
func (d *Backends) Close() {
	for _, c := range d.closers {
		c()
	}
}

// Banner tells a newcomer what the demo started and what to try.
func Banner(cfg *config.Config, srv *gatehouse.Server) string {
	var b strings.Builder
	b.WriteString("\ngatehouse demo is running. Listeners:\n")
	addrs := srv.Addrs()
	for _, l := range cfg.Listeners {
		fmt.Fprintf(&b, "  %-6s %-16s → demo-a, demo-b (%s)\n", l.Name, strings.Join(addrs[l.Name], ","), l.Protocol)
	}
	fmt.Fprintf(&b, "  admin  %s (metrics, status)\n", srv.AdminAddr())
	b.WriteString(`
Try:
  swaks --server 127.0.0.1:2525 --to alice@example.com      # the banner names demo-a or demo-b
  curl -s --cacert demo-ca.pem https://localhost:8443/owa/ -D - -o /dev/null  # X-Backend: names the back-end
  gatehouse tls export-ca -demo > demo-ca.pem                # the demo's local CA
  curl -s --ssl-reqd --cacert demo-ca.pem pop3://localhost:1110/1 -u alice:demo          # alice's mail, on demo-a
  curl -s --ssl-reqd --cacert demo-ca.pem 'imap://localhost:1143/INBOX;MAILINDEX=1' -u bob:demo  # bob's, on demo-b
  curl -s http://127.0.0.1:9900/api/status                   # every back-end and its health
  curl -s http://127.0.0.1:9900/metrics | grep gatehouse_

Stop with Ctrl-C.
`)
	return b.String()
}
