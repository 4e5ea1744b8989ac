package health_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/gatehouse-proxy/gatehouse/health"
)

// The configuration layer builds probes by kind name.
func ExampleNew() {
	owa, err := health.New("https", health.Options{Path: "/owa/healthcheck.htm", ExpectBody: "200 OK"})
	fmt.Printf("%T %v\n", owa, err)
	_, err = health.New("ldap", health.Options{})
	fmt.Println(err)
	// Output:
	// *health.HTTP <nil>
	// health: unknown probe kind "ldap" (valid: tcp, tls, smtp, pop3, imap, http, https)
}

// A back-end dead at start is reported down after its first probe.
func ExampleMonitor() {
	changes := make(chan health.Transition, 1)
	m := health.NewMonitor(nil, func(t health.Transition) { changes <- t })
	defer m.Close()
	refused := health.ProbeFunc(func(context.Context, string) error { return errors.New("connection refused") })
	m.Add(health.Check{Target: "exch1", Name: "owa", Addr: "192.0.2.10:443", Probe: refused})
	t := <-changes
	fmt.Println(t.Target, t.Check, t.Up, t.Err)
	// Output: exch1 owa false connection refused
}
