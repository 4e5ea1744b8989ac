package smtp

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/gatehouse-proxy/gatehouse/protocols/smtp/smtptest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// authFrontend relays AUTH to back-ends that know alice, with a throttle
// that blocks after limit failures.
func authFrontend(t *testing.T, limit int, set func(*Frontend)) (string, []*smtptest.Server) {
	t.Helper()
	backends, addrs := mtas(t, 1, func(s *smtptest.Server) { s.AuthUsers = map[string]string{"alice": "secret"} })
	fe := newFrontend(addrs...)
	fe.Config.Auth = AuthRelay
	fe.Throttle = &proxy.Throttle{Limit: limit, Delay: time.Millisecond}
	if set != nil {
		set(fe)
	}
	addr, _ := serve(t, fe)
	return addr, backends
}

// AUTH PLAIN and LOGIN at the edge; the back-end checks the credentials
// (smtptest records who authenticated).
func TestAuthRelayed(t *testing.T) {
	for _, tc := range []struct {
		name string
		auth func(c *client)
	}{
		{"plain with initial response", func(c *client) { c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), "235 2.0.0 ") }},
		{"plain after empty challenge", func(c *client) {
			c.cmd("AUTH PLAIN", "334 ")
			c.cmd(b64("\x00alice\x00secret"), "235 2.0.0 ")
		}},
		{"login", func(c *client) {
			c.cmd("AUTH LOGIN", "334 "+b64("Username:"))
			c.cmd(b64("alice"), "334 "+b64("Password:"))
			c.cmd(b64("secret"), "235 2.0.0 ")
		}},
		{"login with initial response", func(c *client) {
			c.cmd("AUTH LOGIN "+b64("alice"), "334 "+b64("Password:"))
			c.cmd(b64("secret"), "235 2.0.0 ")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, backends := authFrontend(t, 10, nil)
			c := greeted(t, addr)
			c.cmd("EHLO client.example", "250 ")
			tc.auth(c)
			c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), "503 5.5.1 ") // once per session
			c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
			if msgs := backends[0].Messages(); len(msgs) != 1 || msgs[0].User != "alice" {
				t.Fatalf("back-end got %+v", msgs)
			}
		})
	}
}

// telltale is a back-end that says which of user and password was wrong,
// as some do.
func telltale() *fakeMTA {
	return &fakeMTA{
		Extensions: []string{"AUTH PLAIN", "8BITMIME"},
		Handle: func(s *fakeSession, verb, arg string) bool {
			if verb != "AUTH" {
				return false
			}
			raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(arg, "PLAIN "))
			switch parts := strings.Split(string(raw), "\x00"); {
			case len(parts) != 3 || parts[1] != "alice":
				s.say("535 5.7.8 No such user here")
			case parts[2] != "secret":
				s.say("535 5.7.8 Wrong password for alice")
			default:
				s.say("235 2.7.0 Authentication successful")
			}
			return true
		},
	}
}

// A wrong password and an unknown user get the very same reply whatever
// the back-end said, and the throttle ends the session once the address
// used up its failures.
func TestAuthFailuresLookAlikeAndAreThrottled(t *testing.T) {
	fe := newFrontend(startFake(t, telltale()))
	fe.Config.Auth = AuthRelay
	fe.Throttle = &proxy.Throttle{Limit: 3, AddressLimit: 3, Delay: time.Millisecond}
	addr, _ := serve(t, fe)

	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	wrongPass := c.cmd("AUTH PLAIN "+b64("\x00alice\x00guess"), "535 5.7.8 ")
	wrongUser := c.cmd("AUTH PLAIN "+b64("\x00mallory\x00guess"), "535 5.7.8 ")
	if wrongPass != wrongUser {
		t.Errorf("wrong password got %q, unknown user %q: they must not differ", wrongPass, wrongUser)
	}
	c.cmd("AUTH LOGIN "+b64("alice"), "334 ")
	c.cmd(b64("guess"), "421 4.7.0 ") // third failure: blocked
	c.expectClosed()

	// The address stays blocked: even the right password is refused
	// without asking the back-end.
	c = greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), "421 4.7.0 ")
	c.expectClosed()
}

// A submission listener refuses MAIL before AUTH.
func TestRequireAuth(t *testing.T) {
	addr, _ := authFrontend(t, 10, func(fe *Frontend) { fe.Config.RequireAuth = true })
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("MAIL FROM:<alice@example.org>", "530 5.7.0 Authentication required")
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), "235 ")
	c.mail("alice@example.org", "bob@example.net", "Hello.", "250 ")
}

// With auth: none no AUTH is offered, and AUTH is refused.
func TestAuthNone(t *testing.T) {
	_, addrs := mtas(t, 1, func(s *smtptest.Server) { s.AuthUsers = map[string]string{"alice": "secret"} })
	addr, _ := serve(t, newFrontend(addrs...))
	c := greeted(t, addr)
	if ehlo := c.cmd("EHLO client.example", "250 "); strings.Contains(ehlo, "AUTH") {
		t.Fatalf("AUTH offered with auth: none:\n%s", ehlo)
	}
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), "502 5.7.0 ")
}

// A back-end that offers only LOGIN is still used: PLAIN at the edge
// becomes LOGIN toward it, answering its "Password:" challenge.
func TestAuthLoginOnlyBackend(t *testing.T) {
	fake := &fakeMTA{
		Extensions: []string{"AUTH LOGIN", "8BITMIME"},
		Handle: func(s *fakeSession, verb, arg string) bool {
			if verb != "AUTH" {
				return false
			}
			if arg != "LOGIN "+b64("alice") {
				s.say("535 5.7.8 Bad")
				return true
			}
			s.say("334 " + b64("Password:"))
			if pass, _ := s.line(); pass == b64("secret") {
				s.say("235 2.7.0 Authentication successful")
			} else {
				s.say("535 5.7.8 Authentication failed")
			}
			return true
		},
	}
	fe := newFrontend(startFake(t, fake))
	fe.Config.Auth = AuthRelay
	addr, _ := serve(t, fe)
	c := greeted(t, addr)
	c.cmd("EHLO client.example", "250 ")
	c.cmd("AUTH PLAIN "+b64("\x00alice\x00secret"), "235 ")
}

// A user's sessions follow the user: the session starts on the client
// address's back-end and moves, after AUTH, to the one rendezvous hashing
// picks for the user name.
func TestAffinityUser(t *testing.T) {
	users := map[string]string{"alice": "secret", "bob": "secret", "carol": "secret", "dave": "secret"}
	backends, addrs := mtas(t, 3, func(s *smtptest.Server) { s.AuthUsers = users })
	fe := newFrontend(addrs...)
	fe.Pool.Policy = &proxy.Rendezvous{Fallback: fixedOrder{}}
	fe.Affinity = AffinityUser
	fe.Config.Auth = AuthRelay
	addr, _ := serve(t, fe)

	byAddress := fe.Pool.Pick("127.0.0.1")[0].Name
	user, want := "", ""
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		if b := fe.Pool.Pick(u)[0].Name; b != byAddress {
			user, want = u, b
			break
		}
	}
	if user == "" {
		t.Fatal("every test user hashes to the client address's back-end")
	}
	for range 3 {
		c := greeted(t, addr)
		c.cmd("EHLO client.example", "250 ")
		c.cmd("AUTH PLAIN "+b64("\x00"+user+"\x00secret"), "235 ")
		c.mail(user+"@example.org", "bob@example.net", "Hello.", "250 ")
		c.cmd("QUIT", "221 ")
	}
	for _, b := range backends {
		n := len(b.Messages())
		if b.Name == want && n != 3 || b.Name != want && n != 0 {
			t.Errorf("back-end %s got %d messages; %s's back-end is %s", b.Name, n, user, want)
		}
	}
}

// The LOGIN server speaks draft-murchison-sasl-login: user, then password,
// with or without the user as initial response.
func TestLoginServer(t *testing.T) {
	var gotUser, gotPass string
	check := func(u, p string) error {
		gotUser, gotPass = u, p
		if p != "secret" {
			return errors.New("bad")
		}
		return nil
	}
	s := newLoginServer(check)
	steps := []struct {
		resp      []byte
		challenge string
		done      bool
	}{{nil, "Username:", false}, {[]byte("alice"), "Password:", false}, {[]byte("secret"), "", true}}
	for i, st := range steps {
		ch, done, err := s.Next(st.resp)
		if string(ch) != st.challenge || done != st.done || err != nil {
			t.Fatalf("step %d: %q %v %v", i, ch, done, err)
		}
	}
	if gotUser != "alice" || gotPass != "secret" {
		t.Errorf("checked %q/%q", gotUser, gotPass)
	}
	if _, _, err := s.Next([]byte("more")); !errors.Is(err, sasl.ErrUnexpectedClientResponse) {
		t.Errorf("a fourth response gave %v", err)
	}

	s = newLoginServer(check)
	if ch, _, _ := s.Next([]byte("alice")); string(ch) != "Password:" {
		t.Errorf("with an initial response the first challenge is %q", ch)
	}
	if _, done, err := s.Next([]byte("wrong")); !done || err == nil {
		t.Errorf("a wrong password gave done=%v err=%v", done, err)
	}
}
