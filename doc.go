// Package gatehouse holds the configuration (YAML schema, defaults,
// validation with file:line:col errors) and turns a Config into a running
// Server: listeners with their frontends, pools of back-ends, the health
// monitor wired to them, and the admin listener with metrics and status.
//
// Imports go one way: cmd → gatehouse → protocols/* → proxy, health, tls.
package gatehouse
