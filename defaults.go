package gatehouse

import (
	"net"
	"strconv"
	"time"
)

// Defaults, in one place. Each is documented on the Config field it fills.
const (
	DefaultStateDir      = "/var/lib/gatehouse"
	DefaultAdminListen   = "127.0.0.1:9900"
	DefaultShutdownGrace = 30 * time.Second
	DefaultConnect       = 3 * time.Second
	DefaultIdle          = time.Hour
	DefaultInterval      = 5 * time.Second
	DefaultProbeTimeout  = 3 * time.Second
	DefaultRise          = 2
	DefaultFall          = 3
)

// applyDefaults fills every zero field that has a default.
func applyDefaults(c *Config) {
	setDefault(&c.StateDir, DefaultStateDir)
	setDefault(&c.ShutdownGrace, DefaultShutdownGrace)
	setDefault(&c.Admin.Listen, DefaultAdminListen)
	setDefault(&c.Log.Level, "info")
	setDefault(&c.Log.Format, "text")
	for i := range c.Listeners {
		listenerDefaults(&c.Listeners[i])
	}
}

func listenerDefaults(l *Listener) {
	setDefault(&l.Protocol, "tcp")
	setDefault(&l.Balance, "round-robin")
	setDefault(&l.Affinity, "none")
	setDefault(&l.Timeouts.Connect, DefaultConnect)
	setDefault(&l.Timeouts.Idle, DefaultIdle)
	if l.Port == 0 && len(l.Listen) > 0 {
		if _, p, err := net.SplitHostPort(l.Listen[0]); err == nil {
			l.Port, _ = strconv.Atoi(p)
		}
	}
	if l.Health == nil {
		l.Health = &Health{}
	}
	h := l.Health
	setDefault(&h.Probe, "tcp")
	setDefault(&h.Interval, DefaultInterval)
	setDefault(&h.Timeout, DefaultProbeTimeout)
	setDefault(&h.Rise, DefaultRise)
	setDefault(&h.Fall, DefaultFall)
}

func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}
