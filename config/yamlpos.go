package config

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The YAML parser names the line where the construct it was reading
// began, not the line that broke it, and no column: an over- or
// under-indented key deep in a listener is reported on the listener's
// first line, or on line 1. locateSyntaxError finds the line itself: it
// is the first line from which every longer prefix of the file fails to
// parse (a prefix that fails only because a bracket or a quote is still
// open recovers once it closes). The column is that line's first
// character.

// syntaxProblem turns a YAML parse error ("yaml: line 3: ...") into a
// Problem at the line and column that broke the file.
func (d *decoder) syntaxProblem(data []byte, err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var reported int
	if n, _ := fmt.Sscanf(msg, "line %d:", &reported); n == 1 {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	line := max(firstBrokenLine(lines), reported, 1)
	col := 1
	if line <= len(lines) {
		text := string(lines[line-1])
		col = len(text) - len(strings.TrimLeft(text, " ")) + 1
		msg = explainSyntax(text, msg)
	}
	return Problem{File: d.file, Line: line, Col: col, Msg: msg}
}

// firstBrokenLine returns the 1-based line after the longest prefix of
// lines that parses, or 0 when the whole file does. Parsing a few hundred
// lines is fast enough to try each prefix; it is done only on error. A
// longer file is bisected instead, for the first prefix that fails.
func firstBrokenLine(lines [][]byte) int {
	parses := func(n int) bool {
		var node yaml.Node
		return yaml.Unmarshal(bytes.Join(lines[:n], nil), &node) == nil
	}
	if len(lines) > maxPrefixScan {
		if n := sort.Search(len(lines)+1, func(n int) bool { return !parses(n) }); n <= len(lines) {
			return n
		}
		return 0
	}
	for n := len(lines); n > 0; n-- {
		if parses(n) {
			if n == len(lines) {
				return 0
			}
			return n + 1
		}
	}
	return 1
}

// maxPrefixScan is the longest file whose every prefix is parsed.
const maxPrefixScan = 1000

// explainSyntax adds what the parser's message means for the usual
// mistakes: tabs, and a line that does not line up with its neighbours.
func explainSyntax(line, msg string) string {
	indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
	switch {
	case strings.Contains(indent, "\t"):
		return "a tab in the indentation: YAML indents with spaces only (" + msg + ")"
	case strings.Contains(msg, "did not find expected key"),
		strings.Contains(msg, "did not find expected '-' indicator"),
		strings.Contains(msg, "mapping values are not allowed in this context"),
		strings.Contains(msg, "block sequence entries are not allowed"):
		return msg + ": check this line's indentation against the lines above it"
	}
	return msg
}
