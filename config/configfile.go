package config

import (
	"encoding"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Problem is one error in a configuration file, at a line and column, or
// a warning: something gatehouse serves as written that is probably a
// mistake.
type Problem struct {
	File      string
	Line, Col int
	Msg       string
	Warning   bool
}

// Error formats the problem as FILE:LINE:COL: message, or
// FILE:LINE:COL: warning: message.
func (p Problem) Error() string {
	msg := p.Msg
	if p.Warning {
		msg = "warning: " + msg
	}
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, msg)
}

// Problems is every error found in one configuration file.
type Problems []Problem

// Error lists the problems, one per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Parse checks a configuration given as bytes (name is used in
// errors) as far as the text alone allows: YAML, keys, types, values,
// references between sections. It reads no other file and asks no DNS:
// that is `gatehouse validate -offline`. Its error, if any, is a Problems
// listing every error found; the returned Config has every default
// filled in and remembers where each value stands, for Check.
func Parse(name string, data []byte) (*Config, error) {
	d := &decoder{file: name, nodes: make(map[string]*yaml.Node)}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Problems{d.syntaxProblem(data, err)}
	}
	cfg := &Config{}
	if len(root.Content) > 0 {
		d.decode(root.Content[0], reflect.ValueOf(cfg).Elem(), "")
	}
	// Validation goes on after decoding problems, so one run shows them
	// all; problemAt drops what a decoding problem already explains.
	applyDefaults(cfg)
	validate(cfg, d)
	if len(d.probs) > 0 {
		return nil, d.probs
	}
	cfg.src = &source{file: name, nodes: d.nodes}
	return cfg, nil
}

// decoder decodes a YAML node tree into the config structs strictly,
// recording where every value stands so validation can point at it.
type decoder struct {
	file    string
	probs   Problems
	nodes   map[string]*yaml.Node // config path ("listeners[0].port") → node
	broken  []string              // paths of the values decoding refused
	unknown []string              // paths of the keys decoding did not know
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decodeText decodes a scalar into a typed value that parses itself (an
// address range, a PROXY version): parsed once, here, and refused at its
// line and column when it does not parse.
func (d *decoder) decodeText(n *yaml.Node, u encoding.TextUnmarshaler, path string) {
	if n.Kind != yaml.ScalarNode {
		d.refuse(n, path, "%s must be a single value", describe(path))
		return
	}
	if err := u.UnmarshalText([]byte(n.Value)); err != nil {
		d.refuse(n, path, "%v", err)
	}
}

func (d *decoder) problem(n *yaml.Node, format string, args ...any) {
	p := Problem{File: d.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		p.Line, p.Col = n.Line, n.Column
	}
	d.probs = append(d.probs, p)
}

// refuse reports a value at path that cannot be decoded. The
// field keeps its zero value, so validation must not judge it or what
// depends on it: see explained.
func (d *decoder) refuse(n *yaml.Node, path, format string, args ...any) {
	d.problem(n, format, args...)
	d.broken = append(d.broken, path)
}

// explained reports whether a problem at path would only repeat one that
// decoding reported: about the mapping holding an unknown key or a value
// it does not set (a misspelt "listen" leaves a listener without its
// address, and its back-end port without a default); about a refused value,
// anything inside it, the mapping holding it and its siblings (a refused
// interval, defaulted, is no ground to blame the timeout). One root cause,
// one message; the other problems of the mapping are still reported.
func (d *decoder) explained(path string) bool {
	for _, u := range d.unknown {
		_, set := d.nodes[path]
		if path == parent(u) || parent(path) == parent(u) && !set {
			return true
		}
	}
	for _, b := range d.broken {
		if path == b || strings.HasPrefix(path, b+".") || strings.HasPrefix(path, b+"[") ||
			path == parent(b) || parent(path) == parent(b) {
			return true
		}
	}
	return false
}

// parent returns the path of the mapping or list holding path.
func parent(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

// problemAt reports a problem at a config path's node, or at the nearest
// enclosing one that exists, unless decoding already explained it.
func (d *decoder) problemAt(path, format string, args ...any) {
	if !d.explained(path) {
		d.problem(nodeAt(d.nodes, path), format, args...)
	}
}

// problemIn reports err, found in the mapping at path, at the key the
// message starts with ("mode: ..." or `mode "x": ...`) when the file sets
// it, else at the mapping.
func (d *decoder) problemIn(path string, err error, format string, args ...any) {
	key, _, _ := strings.Cut(err.Error(), ":")
	key, _, _ = strings.Cut(key, " ")
	if _, ok := d.nodes[path+"."+key]; ok && key != "" {
		path += "." + key
	}
	d.problemAt(path, format, args...)
}

// nodeAt returns the node of a config path, or of the nearest enclosing
// path that has one, or one at line 1, column 1.
func nodeAt(nodes map[string]*yaml.Node, path string) *yaml.Node {
	for p := path; ; p = parent(p) {
		if n, ok := nodes[p]; ok {
			return n
		}
		if p == "" {
			return &yaml.Node{Line: 1, Column: 1}
		}
	}
}

// decode fills v from n, recording problems rather than stopping at the
// first, so one run of `gatehouse validate` shows them all.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	d.nodes[path] = n
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	switch {
	case v.Type() == reflect.TypeFor[StringList]():
		d.decodeStringList(n, v, path)
	case v.Type() == durationType:
		d.decodeDuration(n, v, path)
	case v.CanAddr() && v.Addr().Type().Implements(textUnmarshaler):
		d.decodeText(n, v.Addr().Interface().(encoding.TextUnmarshaler), path)
	case v.Kind() == reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		d.decode(n, v.Elem(), path)
	case v.Kind() == reflect.Struct:
		d.decodeStruct(n, v, path)
	case v.Kind() == reflect.Map:
		d.decodeMap(n, v, path)
	case v.Kind() == reflect.Slice:
		d.decodeSlice(n, v, path)
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.refuse(n, path, "%s must be a mapping of keys to values", describe(path))
		return
	}
	fields := yamlFields(v.Type())
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		p := join(path, key.Value)
		idx, ok := fields[key.Value]
		if !ok {
			d.problem(key, "unknown key %q in %s (%s)", key.Value, describe(path), suggest(key.Value, fields))
			d.unknown = append(d.unknown, p)
			continue
		}
		if d.twice(key, p) {
			continue
		}
		d.decode(val, v.Field(idx), p)
	}
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.refuse(n, path, "%s must be a mapping", describe(path))
		return
	}
	v.Set(reflect.MakeMap(v.Type()))
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		elem := reflect.New(v.Type().Elem()).Elem()
		p := join(path, key.Value)
		if d.twice(key, p) {
			continue
		}
		d.decode(val, elem, p)
		v.SetMapIndex(reflect.ValueOf(key.Value), elem)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.refuse(n, path, "%s must be a list", describe(path))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func (d *decoder) decodeStringList(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.ScalarNode {
		v.Set(reflect.ValueOf(StringList{n.Value}))
		return
	}
	d.decodeSlice(n, v, path)
}

// twice records where a key stands, and reports a key given a second time
// in one mapping (the YAML library keeps the last silently).
func (d *decoder) twice(key *yaml.Node, path string) bool {
	if first, ok := d.nodes[path+"#key"]; ok {
		d.problem(key, "%s given twice (first on line %d)", key.Value, first.Line)
		return true
	}
	d.nodes[path+"#key"] = key
	return false
}

func (d *decoder) decodeDuration(n *yaml.Node, v reflect.Value, path string) {
	dur, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || dur < 0 {
		d.refuse(n, path, "bad duration %q: want a number with a unit, like 5s, 500ms or 1m30s", n.Value)
		return
	}
	v.SetInt(int64(dur))
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.refuse(n, path, "want a single value here (%s), not a list or mapping", kindName(v.Kind()))
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		d.refuse(n, path, "bad value %q: want %s", n.Value, kindName(v.Kind()))
	}
}

// yamlFields maps a struct's yaml keys to field indexes.
func yamlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag != "" && tag != "-" {
			m[tag] = i
		}
	}
	return m
}

// suggest names the known key a misspelt one probably meant, or lists
// them all.
func suggest(key string, fields map[string]int) string {
	best, dist := "", 3 // farther than 2 edits is not a misspelling
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if d := editDistance(key, k); d < dist && len(k) > 2 {
			best, dist = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	return "known: " + strings.Join(slices.Sorted(maps.Keys(fields)), ", ")
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describe(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "a whole number"
	case reflect.String:
		return "a string"
	}
	return k.String()
}
