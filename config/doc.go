// Package config is gatehouse's configuration: the YAML file's types with
// a doc line per field saying what its zero value means, every default in
// one place (defaults.go), and the one checker that both `gatehouse
// validate` and `gatehouse run` (and every reload) use. Parse checks the
// text alone and reports every problem with its file:line:col; Check adds
// what needs other files or DNS (certificate and key files, map files,
// back-end names), with warnings that never refuse a file.
//
// It may import the packages whose options it embeds or checks (proxy,
// health, tls and the protocol packages' Config types); nothing but the
// gatehouse package and the command import it.
package config
