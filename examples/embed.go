// Package examples holds the ready-made configurations, and embeds the demo
// one so that `gatehouse demo` runs exactly the file shipped here.
//
// It imports nothing; the command and tests import it.
package examples

import _ "embed"

// Demo is examples/demo.yaml.
//
//go:embed demo.yaml
var Demo []byte
