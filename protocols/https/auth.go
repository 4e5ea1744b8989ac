package https

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"unicode/utf16"
)

// credentials is what a request's Authorization header tells about the
// client: the scheme, whether it binds the connection (NTLM, Negotiate),
// and the user name when the header shows one (Basic, or the NTLM
// AUTHENTICATE message, which carries user and domain in clear).
type credentials struct {
	scheme   string // "basic", "ntlm", "negotiate", "bearer", other lower-cased, or ""
	connAuth bool   // NTLM or Negotiate: the back-end authenticates the connection
	final    bool   // the message that completes a login (Basic, NTLM type 3)
	user     string
}

// parseAuthorization reads an Authorization header value.
func parseAuthorization(v []byte) credentials {
	scheme, token, _ := bytes.Cut(bytes.TrimSpace(v), []byte(" "))
	var c credentials
	c.scheme = strings.ToLower(string(scheme))
	token = bytes.TrimSpace(token)
	switch c.scheme {
	case "basic":
		c.final = true
		c.user = basicUser(token)
	case "ntlm", "negotiate":
		c.connAuth = true
		c.user, c.final = ntlmUser(token)
	}
	return c
}

// basicUser returns the user of a Basic token ("user:password", base64).
func basicUser(token []byte) string {
	raw, err := base64.StdEncoding.DecodeString(string(token))
	if err != nil {
		return ""
	}
	user, _, _ := bytes.Cut(raw, []byte(":"))
	return string(user)
}

// ntlmUser returns "DOMAIN\user" from an NTLM AUTHENTICATE message
// ([MS-NLMP] section 2.2.1.3), bare or inside a Negotiate (SPNEGO) token,
// and whether the token is such a message.
func ntlmUser(token []byte) (string, bool) {
	raw, err := base64.StdEncoding.DecodeString(string(token))
	if err != nil {
		return "", false
	}
	i := bytes.Index(raw, []byte("NTLMSSP\x00"))
	if i < 0 {
		return "", false
	}
	m := raw[i:]
	if len(m) < 64 || binary.LittleEndian.Uint32(m[8:12]) != 3 {
		return "", false
	}
	unicode := binary.LittleEndian.Uint32(m[60:64])&1 != 0
	domain := ntlmField(m, 28, unicode)
	user := ntlmField(m, 36, unicode)
	if domain != "" {
		return domain + `\` + user, true
	}
	return user, true
}

// ntlmField decodes a security buffer (length, max length, offset) at off.
func ntlmField(m []byte, off int, unicode bool) string {
	n := int(binary.LittleEndian.Uint16(m[off:]))
	at := int(binary.LittleEndian.Uint32(m[off+4:]))
	if n == 0 || at < 0 || at+n > len(m) || n > 512 {
		return ""
	}
	b := m[at : at+n]
	if !unicode {
		return string(b)
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// bindsConnection reports whether a response makes the back-end connection
// private to its client (haproxy's rule, extended as [MS-NTHT] and IIS's
// authPersistNonNTLM require): a 401 offering NTLM or Negotiate in
// WWW-Authenticate, a 407 offering them in Proxy-Authenticate, or
// Persistent-Auth: true.
func bindsConnection(status int, h *head) bool {
	if h.has("Persistent-Auth", "true") {
		return true
	}
	var name string
	switch status {
	case 401:
		name = "WWW-Authenticate"
	case 407:
		name = "Proxy-Authenticate"
	default:
		return false
	}
	for _, f := range h.hdrs {
		if equalFold(f.name, name) && offersConnAuth(f.value) {
			return true
		}
	}
	return false
}

// offersConnAuth reports whether a challenge list offers NTLM, Negotiate
// or Nego2.
func offersConnAuth(v []byte) bool {
	for len(v) > 0 {
		var item []byte
		item, v, _ = bytes.Cut(v, []byte(","))
		item = bytes.TrimLeft(item, " \t")
		if hasPrefixFold(item, "ntlm") || hasPrefixFold(item, "nego") {
			return true
		}
	}
	return false
}
