package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

const goodConfig = `
backends:
  cas1: {address: 10.0.0.11}
  cas2: {address: 10.0.0.12, weight: 2}
listeners:
  - name: smtp
    protocol: tcp
    listen: ["0.0.0.0:25"]
    backends: [cas1, cas2]
    port: 25
    affinity: source-ip
    health: {probe: smtp, interval: 5s, timeout: 3s, rise: 2, fall: 3}
`

func TestParseConfigGoodWithDefaults(t *testing.T) {
	cfg, err := Parse("gatehouse.yaml", []byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Listeners[0]
	if l.Balance != "round-robin" || l.Timeouts.Connect != DefaultConnect || l.Timeouts.Idle != DefaultIdle {
		t.Errorf("defaults not applied: %+v", l)
	}
	if l.Health.Interval != 5*time.Second || l.Health.Probe != "smtp" {
		t.Errorf("health = %+v", l.Health)
	}
	if cfg.Admin.Listen != DefaultAdminListen || cfg.Backends["cas2"].Weight != 2 {
		t.Errorf("cfg = %+v", cfg)
	}
}

func TestParseConfigListenAcceptsOneStringOrAList(t *testing.T) {
	cfg, err := Parse("x.yaml", []byte(`
backends: {a: {address: 127.0.0.1}}
listeners:
  - {name: one, listen: "127.0.0.1:2525", backends: [a]}
  - {name: two, listen: ["127.0.0.1:110", "127.0.0.1:995"], backends: [a], port: 110}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Listeners[0].Listen; len(got) != 1 || cfg.Listeners[0].Port != 2525 {
		t.Errorf("one: listen %v port %d", got, cfg.Listeners[0].Port)
	}
	if got := cfg.Listeners[1].Listen; len(got) != 2 {
		t.Errorf("two: listen %v", got)
	}
}

// Each error kind is reported with the line and column of the offending
// value, so an administrator can jump straight to it.
func TestParseConfigErrorsHaveLineAndColumn(t *testing.T) {
	base := "backends:\n  a: {address: 127.0.0.1}\nlisteners:\n"
	tests := []struct {
		name, yaml string
		want       string // "LINE:COL: substring"
	}{
		{"unknown top-level key", "backendz: {}\n" + base + "  - {name: l, listen: '127.0.0.1:1', backends: [a]}\n",
			`1:1: unknown key "backendz"`},
		{"unknown listener key", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a]\n    balancing: least-conn\n",
			`7:5: unknown key "balancing"`},
		{"bad duration", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a]\n    timeouts: {connect: 5 seconds}\n",
			`7:25: bad duration "5 seconds"`},
		{"duration without unit", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a]\n    health: {interval: 5}\n",
			`7:24: bad duration "5"`},
		{"port twice", base + "  - {name: l, listen: '0.0.0.0:25', backends: [a]}\n  - {name: m, listen: '127.0.0.1:25', backends: [a]}\n",
			`5:23: port 25 is already used by listeners[0].listen`},
		{"port of the admin listener", "admin: {listen: '127.0.0.1:9900'}\n" + base + "  - {name: l, listen: '0.0.0.0:9900', backends: [a]}\n",
			`5:23: port 9900 is already used by admin.listen`},
		{"unknown back-end", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a, cas9]\n",
			`6:19: unknown back-end "cas9"`},
		{"bad weight type", "backends:\n  a: {address: 127.0.0.1, weight: heavy}\nlisteners:\n  - {name: l, listen: '127.0.0.1:1', backends: [a]}\n",
			`2:35: bad value "heavy": want a whole number`},
		{"unknown balance", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a]\n    balance: random\n",
			`7:14: balance: unknown value "random"`},
		{"unknown probe", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a]\n    health: {probe: ping}\n",
			`7:21: probe: unknown value "ping"`},
		{"bad listen address", base + "  - {name: l, listen: 'mail:25', backends: [a]}\n",
			`4:23: bad listen address "mail:25"`},
		{"bad trusted cidr", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a]\n    proxy_protocol: {trusted: [10.0.0.0/33]}\n",
			`7:32: bad address range "10.0.0.0/33"`},
		{"duplicate listener name", base + "  - {name: l, listen: '127.0.0.1:1', backends: [a]}\n  - {name: l, listen: '127.0.0.1:2', backends: [a]}\n",
			`5:12: listener name "l" used twice`},
		{"yaml syntax", "backends: [\n", `1:1: did not find expected node content`},
		{"mapping expected", "backends:\n  a: 127.0.0.1\nlisteners: []\n", `2:6: backends.a must be a mapping`},
		{"key twice", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a]\n    listen: 127.0.0.1:2\n",
			`7:5: listen given twice (first on line 5)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("gh.yaml", []byte(tt.yaml))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("err = %v, want Problems", err)
			}
			if !strings.Contains(err.Error(), "gh.yaml:"+tt.want) {
				t.Errorf("got:\n%v\nwant a line containing gh.yaml:%s", err, tt.want)
			}
		})
	}
}

// A misspelt key, a value of the wrong type and a reference to nothing
// are three problems, reported together: the misspelling hides neither.
func TestParseConfigReportsEveryProblemAtOnce(t *testing.T) {
	_, err := Parse("gh.yaml", []byte(`
backends:
  a: {address: 127.0.0.1, wieght: 2}
listeners:
  - {name: l, listen: '127.0.0.1:1', backends: [b], timeouts: {idle: forever}}
`))
	wantProblems(t, err,
		`gh.yaml:3:27: unknown key "wieght"`,
		`gh.yaml:5:70: bad duration "forever"`,
		`gh.yaml:5:49: unknown back-end "b"`)
}

// A typo in one listener's key is reported, and so is another listener's
// problem; what the typo explains (the listener then lacks its listen
// address) is not reported a second time.
func TestParseConfigTypoDoesNotHideOtherProblems(t *testing.T) {
	_, err := Parse("gh.yaml", []byte(`backends: {a: {address: 127.0.0.1}}
listeners:
  - name: l
    lisen: 127.0.0.1:1
    backends: [a]
  - name: m
    listen: 127.0.0.1:2
    backends: [a]
    balance: random
`))
	wantProblems(t, err,
		`gh.yaml:4:5: unknown key "lisen"`,
		`gh.yaml:9:14: balance: unknown value "random"`)
}

// A wrong protocol is one message naming the key, not a cascade about
// the affinity, the probe or the options that the protocol would have
// made right.
func TestParseConfigWrongProtocolIsOneMessage(t *testing.T) {
	_, err := Parse("gh.yaml", []byte(`backends: {a: {address: 127.0.0.1}}
listeners:
  - name: l
    protocol: smtps
    listen: 127.0.0.1:1
    backends: [a]
    tls: {mode: starttls}
    smtp: {mode: relay}
    health: {interval: 5s}
`))
	wantProblems(t, err, `gh.yaml:4:15: protocol: unknown value "smtps" (want one of: tcp, smtp, pop3, imap, https)`)
}

// An indentation error is reported at the line that breaks the file and
// the column where its text starts, not where the YAML parser's context
// began (often line 1).
func TestParseConfigIndentationErrorAtItsLine(t *testing.T) {
	for _, tt := range []struct{ name, yaml, want string }{
		{"key indented less than its siblings",
			"backends: {a: {address: 127.0.0.1}}\nlisteners:\n  - name: l\n    listen: 127.0.0.1:1\n   backends: [a]\n",
			"gh.yaml:5:4: did not find expected '-' indicator: check this line's indentation"},
		{"key indented more than its siblings",
			"backends: {a: {address: 127.0.0.1}}\nlisteners:\n  - name: l\n    listen: 127.0.0.1:1\n      backends: [a]\n",
			"gh.yaml:5:7: mapping values are not allowed in this context: check this line's indentation"},
		{"section indented by one",
			"backends:\n  a: {address: 127.0.0.1}\n listeners:\n  - {name: l, listen: '127.0.0.1:1', backends: [a]}\n",
			"gh.yaml:3:2: did not find expected key: check this line's indentation"},
		{"key at a list item's level",
			"backends: {a: {address: 127.0.0.1}}\nlisteners:\n  - name: l\n    listen: 127.0.0.1:1\n  backends: [a]\n",
			"gh.yaml:5:3: did not find expected '-' indicator: check this line's indentation"},
		{"tab",
			"backends: {a: {address: 127.0.0.1}}\nlisteners:\n  - name: l\n\tlisten: 127.0.0.1:1\n",
			"gh.yaml:4:1: a tab in the indentation: YAML indents with spaces only"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("gh.yaml", []byte(tt.yaml))
			wantProblems(t, err, tt.want)
		})
	}
}

// A long file is bisected rather than scanned, and finds the same line.
func TestParseConfigIndentationErrorInALongFile(t *testing.T) {
	var b strings.Builder
	b.WriteString("backends:\n")
	for i := range 1500 {
		fmt.Fprintf(&b, "  b%d: {address: 127.0.0.1}\n", i)
	}
	b.WriteString("listeners:\n  - name: l\n    listen: 127.0.0.1:1\n   backends: [b1]\n")
	_, err := Parse("gh.yaml", []byte(b.String()))
	wantProblems(t, err, "gh.yaml:1505:4: did not find expected '-' indicator")
}

// wantProblems checks that err is a Problems with exactly one problem per
// want, each containing its want.
func wantProblems(t *testing.T, err error, want ...string) {
	t.Helper()
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("err = %v, want Problems", err)
	}
	if len(ps) != len(want) {
		t.Errorf("%d problems, want %d:\n%v", len(ps), len(want), err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("no problem contains %q:\n%v", w, err)
		}
	}
}

// Whatever the bytes, ParseConfig returns a Config or problems that each
// have a line and a column, and never panics: validation now runs on what
// a broken file leaves half decoded.
func FuzzParseConfig(f *testing.F) {
	for _, name := range []string{"../examples/demo.yaml", "../examples/exchange.yaml", "../examples/postfix-dovecot.yaml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(goodConfig))
	f.Add([]byte("listeners: [{name: l, listen: {a: 1}, backends: 7, health: [], tls: x, timeouts: {idle: []}}]\n"))
	f.Add([]byte("backends: {a: []}\ncertificates: {default: [1]}\nlisteners:\n  - https: {services: 3}\n    protocol: https\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.yaml", data)
		var ps Problems
		switch {
		case err == nil && cfg == nil:
			t.Fatal("no Config and no error")
		case err != nil && !errors.As(err, &ps):
			t.Fatalf("err %v is not Problems", err)
		}
		for _, p := range ps {
			if p.Line < 1 || p.Col < 1 {
				t.Errorf("problem without a position: %+v", p)
			}
		}
	})
}

func TestThrottleRealmsValidated(t *testing.T) {
	base := "backends:\n  a: {address: 127.0.0.1}\nlisteners:\n  - {name: l, listen: '127.0.0.1:1', backends: [a]}\n"
	for yaml, want := range map[string]string{
		"throttle: {realms: {'CORP.X': example.com}}\n": `"CORP.X" is not a NetBIOS domain name`,
		"throttle: {realms: {CORP: 'a@b'}}\n":           `"a@b" is not a DNS domain`,
		"throttle: {default_realm: 'ex ample'}\n":       `"ex ample" is not a DNS domain`,
	} {
		_, err := Parse("gh.yaml", []byte(yaml+base))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %s", yaml, err, want)
		}
	}
	if _, err := Parse("gh.yaml", []byte("throttle: {realms: {CORP: example.com}, default_realm: example.com}\n"+base)); err != nil {
		t.Errorf("good realms refused: %v", err)
	}
}
