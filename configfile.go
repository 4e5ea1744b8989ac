package gatehouse

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Problem is one error in a configuration file, at a line and column.
type Problem struct {
	File      string
	Line, Col int
	Msg       string
}

// Error formats the problem as FILE:LINE:COL: message.
func (p Problem) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, p.Msg)
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

// LoadConfig reads, decodes, defaults and validates a configuration file.
// Its error, if any, is a Problems listing every error found.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig is LoadConfig on bytes already read; name is used in errors.
// The returned Config has every default filled in.
func ParseConfig(name string, data []byte) (*Config, error) {
	d := &decoder{file: name, nodes: make(map[string]*yaml.Node)}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Problems{d.syntaxProblem(err)}
	}
	cfg := &Config{}
	if len(root.Content) > 0 {
		d.decode(root.Content[0], reflect.ValueOf(cfg).Elem(), "")
	}
	if len(d.probs) > 0 {
		return nil, d.probs
	}
	applyDefaults(cfg)
	validate(cfg, d)
	if len(d.probs) > 0 {
		return nil, d.probs
	}
	return cfg, nil
}

// decoder decodes a YAML node tree into the config structs strictly,
// recording where every value stands so validation can point at it.
type decoder struct {
	file  string
	probs Problems
	nodes map[string]*yaml.Node // config path ("listeners[0].port") → node
}

var durationType = reflect.TypeFor[time.Duration]()

func (d *decoder) problem(n *yaml.Node, format string, args ...any) {
	p := Problem{File: d.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		p.Line, p.Col = n.Line, n.Column
	}
	d.probs = append(d.probs, p)
}

// problemAt reports a problem at a config path's node, or at the nearest
// enclosing one that exists.
func (d *decoder) problemAt(path, format string, args ...any) {
	for p := path; ; {
		if n, ok := d.nodes[p]; ok {
			d.problem(n, format, args...)
			return
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			d.problem(&yaml.Node{Line: 1, Column: 1}, format, args...)
			return
		}
		p = p[:i]
	}
}

// syntaxProblem turns a YAML parse error ("yaml: line 3: ...") into a Problem.
func (d *decoder) syntaxProblem(err error) Problem {
	p := Problem{File: d.file, Line: 1, Col: 1, Msg: err.Error()}
	var line int
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		p.Line = line
		p.Msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	return p
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
		d.decodeDuration(n, v)
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
		d.decodeScalar(n, v)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.problem(n, "%s must be a mapping of keys to values", describe(path))
		return
	}
	fields := yamlFields(v.Type())
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		idx, ok := fields[key.Value]
		if !ok {
			d.problem(key, "unknown key %q in %s (known: %s)", key.Value, describe(path), strings.Join(sortedKeys(fields), ", "))
			continue
		}
		d.decode(val, v.Field(idx), join(path, key.Value))
		d.nodes[join(path, key.Value)+"#key"] = key
	}
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.problem(n, "%s must be a mapping", describe(path))
		return
	}
	v.Set(reflect.MakeMap(v.Type()))
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		elem := reflect.New(v.Type().Elem()).Elem()
		p := join(path, key.Value)
		d.decode(val, elem, p)
		d.nodes[p+"#key"] = key
		v.SetMapIndex(reflect.ValueOf(key.Value), elem)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.problem(n, "%s must be a list", describe(path))
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

func (d *decoder) decodeDuration(n *yaml.Node, v reflect.Value) {
	dur, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || dur < 0 {
		d.problem(n, "bad duration %q: want a number with a unit, like 5s, 500ms or 1m30s", n.Value)
		return
	}
	v.SetInt(int64(dur))
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.ScalarNode {
		d.problem(n, "want a single %s value here", kindName(v.Kind()))
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		d.problem(n, "bad value %q: want %s", n.Value, kindName(v.Kind()))
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

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
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
