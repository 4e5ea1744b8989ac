// Package gatehouse assembles a running gatehouse from a configuration
// (package config): listeners with their frontends, each given the
// proxy.Link its settings make; pools of back-ends, which the health
// monitor reaches through the handle the builder wires; the admin
// listener (package admin), which it serves through admin.Server; and the
// lifecycle — reload (a live session keeps the configuration it started
// with), upgrade hand-over (package upgrade) and shutdown.
//
// Imports go one way: cmd → gatehouse → config, admin, upgrade,
// protocols/* → proxy, health, tls. admin and upgrade import no other
// gatehouse package; nothing imports cmd.
package gatehouse
