package gatehouse

import (
	"errors"
	"io"
)

// DemoBackends are the demo back-end servers `gatehouse demo` runs.
type DemoBackends struct {
	closers []io.Closer
}

// StartDemoBackends starts, for every listener of the demo config, one
// demo server of its kind per back-end, at the back-end's address.
func StartDemoBackends(cfg *Config) (*DemoBackends, error) {
	return nil, errors.New("demo back-ends are not available in this build")
}

// Close stops every demo back-end.
func (d *DemoBackends) Close() {
	for _, c := range d.closers {
		c.Close()
	}
}

// DemoBanner tells a newcomer what the demo started and what to try.
func DemoBanner(cfg *Config, srv *Server) string {
	return ""
}
