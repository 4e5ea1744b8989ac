// Package gatehouse holds the configuration (YAML schema, defaults,
// validation with file:line:col errors) and turns a Config into a running
// Server: listeners with their frontends, pools of back-ends, the health
// monitor wired to them, and the admin listener (package admin), which it
// serves the running Server to through admin.Server.
//
// Imports go one way: cmd → gatehouse → admin, protocols/* → proxy, health,
// tls; admin imports no other gatehouse package.
package gatehouse
