package health

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
)

// New builds each kind with its options, and refuses what the kind would
// not use.
func TestNew(t *testing.T) {
	cfg := &stdtls.Config{ServerName: "mail.example.test"}
	tests := []struct {
		kind string
		o    Options
		want Probe
	}{
		{"tcp", Options{}, &TCP{}},
		{"tls", Options{TLSConfig: cfg}, &TLS{Config: cfg}},
		{"smtp", Options{HELO: "gate.example.test", StartTLS: true, TLSConfig: cfg},
			&SMTP{HELO: "gate.example.test", StartTLS: true, TLSConfig: cfg}},
		{"smtp", Options{ImplicitTLS: true}, &SMTP{ImplicitTLS: true}},
		{"pop3", Options{StartTLS: true}, &POP3{Capa: true, StartTLS: true}},
		{"imap", Options{ImplicitTLS: true}, &IMAP{ImplicitTLS: true}},
		{"http", Options{Path: "/owa/healthcheck.htm", Host: "mail.example.test", ExpectStatus: 200, ExpectBody: "200 OK"},
			&HTTP{Path: "/owa/healthcheck.htm", Host: "mail.example.test", ExpectStatus: 200, ExpectBody: "200 OK"}},
		{"https", Options{Path: "/ews/healthcheck.htm"}, &HTTP{Path: "/ews/healthcheck.htm", HTTPS: true}},
		{"http", Options{ImplicitTLS: true}, &HTTP{HTTPS: true}},
	}
	for _, tt := range tests {
		got, err := New(tt.kind, tt.o)
		if err != nil {
			t.Errorf("New(%q): %v", tt.kind, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("New(%q) = %#v, want %#v", tt.kind, got, tt.want)
		}
	}
}

// New hands the Dial function to the probe.
func TestNewKeepsDial(t *testing.T) {
	called := false
	dial := func(context.Context, string, string) (net.Conn, error) {
		called = true
		return nil, errors.New("no network here")
	}
	p, err := New("imap", Options{Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	wantStage(t, probeNow(p, "imap1.example.test:143"), StageConnect)
	if !called {
		t.Error("the probe did not dial through Options.Dial")
	}
}

// Unknown kinds and misplaced options are configuration errors.
func TestNewRefuses(t *testing.T) {
	tests := []struct {
		kind string
		o    Options
		want string
	}{
		{"ldap", Options{}, "valid: tcp, tls, smtp, pop3, imap, http, https"},
		{"SMTP", Options{}, "unknown probe kind"},
		{"http", Options{StartTLS: true}, "starttls"},
		{"tcp", Options{StartTLS: true}, "starttls"},
		{"smtp", Options{StartTLS: true, ImplicitTLS: true}, "exclude"},
		{"tcp", Options{ImplicitTLS: true}, "tls kind"},
		{"imap", Options{HELO: "x"}, "helo"},
		{"smtp", Options{HELO: "two words"}, "single word"},
		{"smtp", Options{Path: "/"}, "http and https only"},
		{"tls", Options{ExpectStatus: 200}, "http and https only"},
		{"http", Options{Path: "owa/healthcheck.htm"}, "does not begin with /"},
		{"http", Options{Path: "/a b"}, "spaces"},
		{"https", Options{Host: "mail\r\nX-Evil: 1"}, "control"},
		{"http", Options{ExpectStatus: 2000}, "not an HTTP status"},
	}
	for _, tt := range tests {
		p, err := New(tt.kind, tt.o)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%q, %+v) = %v, %v; want an error containing %q", tt.kind, tt.o, p, err, tt.want)
		}
	}
}

// Every listed kind is one New builds.
func TestKinds(t *testing.T) {
	for _, kind := range Kinds {
		if _, err := New(kind, Options{}); err != nil {
			t.Errorf("New(%q): %v", kind, err)
		}
	}
}

// Error reads "stage: cause" and unwraps to the cause.
func TestError(t *testing.T) {
	err := error(&Error{Stage: StageProtocol, Err: io.ErrUnexpectedEOF})
	if got, want := err.Error(), "protocol: unexpected EOF"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Error("Error does not unwrap to its cause")
	}
}

// Text from the network is masked and capped before it reaches a log line.
func TestClean(t *testing.T) {
	if got, want := clean("421 bye\x1b[2J\r\nnext"), "421 bye?[2J? / next"; got != want {
		t.Errorf("clean = %q, want %q", got, want)
	}
	if got := clean(strings.Repeat("x", 500)); len(got) != 203 {
		t.Errorf("clean of 500 bytes is %d bytes, want 200 and an ellipsis", len(got))
	}
}
