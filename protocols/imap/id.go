package imap

import (
	"strings"
)

// ID limits, as Dovecot enforces them on what gatehouse forwards.
const (
	maxIDFields = 30
	maxIDKey    = 30
	maxIDValue  = 1024
)

// idField is one field of an ID list (RFC 2971 section 3.1); a nil value
// is NIL.
type idField struct {
	key   string
	value *string
}

// idCmd serves ID (RFC 2971): it keeps the client's fields to forward to
// the back-end and names gatehouse.
func (s *session) idCmd(cmd *command) error {
	if len(cmd.args) != 1 || (cmd.args[0].kind != kindNIL && cmd.args[0].kind != kindList) {
		return s.Reply(cmd.tag + " BAD ID takes NIL or a list of field-value pairs")
	}
	fields, ok := parseID(cmd.args[0].list)
	if !ok {
		return s.Reply(cmd.tag + " BAD ID takes NIL or a list of field-value pairs")
	}
	s.id = fields
	return s.Reply(`* ID ("name" "gatehouse")`, cmd.tag+" OK ID completed")
}

// parseID reads field-value pairs, keeping those that are safe to forward:
// not x- fields (Dovecot trusts those from gatehouse to name the client),
// within Dovecot's size limits, at most maxIDFields.
func parseID(list []arg) ([]idField, bool) {
	if len(list)%2 != 0 {
		return nil, false
	}
	var out []idField
	for i := 0; i < len(list); i += 2 {
		k, v := list[i], list[i+1]
		if k.kind != kindString || (v.kind != kindString && v.kind != kindNIL) {
			return nil, false
		}
		if strings.HasPrefix(strings.ToLower(k.s), "x-") || len(k.s) > maxIDKey || len(v.s) > maxIDValue || len(out) >= maxIDFields {
			continue
		}
		f := idField{key: k.s}
		if v.kind == kindString {
			f.value = &v.s
		}
		out = append(out, f)
	}
	return out, true
}
