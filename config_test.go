package gatehouse

import (
	"errors"
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
	cfg, err := ParseConfig("gatehouse.yaml", []byte(goodConfig))
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
	cfg, err := ParseConfig("x.yaml", []byte(`
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
		{"unknown back-end", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a, cas9]\n",
			`6:19: unknown back-end "cas9"`},
		{"bad weight type", "backends:\n  a: {address: 127.0.0.1, weight: heavy}\nlisteners:\n  - {name: l, listen: '127.0.0.1:1', backends: [a]}\n",
			`2:35: bad value "heavy": want a whole number`},
		{"unknown balance", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a]\n    balance: random\n",
			`7:14: unknown value "random"`},
		{"unknown probe", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a]\n    health: {probe: ping}\n",
			`7:21: unknown value "ping"`},
		{"bad listen address", base + "  - {name: l, listen: 'mail:25', backends: [a]}\n",
			`4:23: bad listen address "mail:25"`},
		{"bad trusted cidr", base + "  - name: l\n    listen: 127.0.0.1:1\n    backends: [a]\n    proxy_protocol: {trusted: [10.0.0.0/33]}\n",
			`7:32: bad address range "10.0.0.0/33"`},
		{"duplicate listener name", base + "  - {name: l, listen: '127.0.0.1:1', backends: [a]}\n  - {name: l, listen: '127.0.0.1:2', backends: [a]}\n",
			`5:12: listener name "l" used twice`},
		{"yaml syntax", "backends: [\n", `1:1: did not find expected node content`},
		{"mapping expected", "backends:\n  a: 127.0.0.1\nlisteners: []\n", `2:6: backends.a must be a mapping`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("gh.yaml", []byte(tt.yaml))
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

func TestParseConfigReportsEveryProblemAtOnce(t *testing.T) {
	_, err := ParseConfig("gh.yaml", []byte(`
backends:
  a: {address: 127.0.0.1, wieght: 2}
listeners:
  - {name: l, listen: '127.0.0.1:1', backends: [b], timeouts: {idle: forever}}
`))
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 2 {
		t.Fatalf("want 2 problems (decode stage), got %v", err)
	}
}

func TestThrottleRealmsValidated(t *testing.T) {
	base := "backends:\n  a: {address: 127.0.0.1}\nlisteners:\n  - {name: l, listen: '127.0.0.1:1', backends: [a]}\n"
	for yaml, want := range map[string]string{
		"throttle: {realms: {'CORP.X': example.com}}\n": `"CORP.X" is not a NetBIOS domain name`,
		"throttle: {realms: {CORP: 'a@b'}}\n":           `"a@b" is not a DNS domain`,
		"throttle: {default_realm: 'ex ample'}\n":       `"ex ample" is not a DNS domain`,
	} {
		_, err := ParseConfig("gh.yaml", []byte(yaml+base))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %s", yaml, err, want)
		}
	}
	if _, err := ParseConfig("gh.yaml", []byte("throttle: {realms: {CORP: example.com}, default_realm: example.com}\n"+base)); err != nil {
		t.Errorf("good realms refused: %v", err)
	}
}
