package exchangetest

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math/bits"
	"strings"
	"unicode/utf16"
)

// NTLM as IIS speaks it over HTTP ([MS-NLMP], [MS-NTHT]): the server
// answers a NEGOTIATE message with a CHALLENGE that it remembers for the
// TCP connection, and accepts an AUTHENTICATE message only on that same
// connection. Only NTLMv2 responses are accepted (what curl and
// go-ntlmssp send when the challenge carries target information).

// NTLM negotiate flags used in the challenge.
const (
	flagUnicode        = 0x00000001
	flagRequestTarget  = 0x00000004
	flagNTLM           = 0x00000200
	flagAlwaysSign     = 0x00008000
	flagTargetDomain   = 0x00010000
	flagExtendedSecure = 0x00080000
	flagTargetInfo     = 0x00800000
	flag128            = 0x20000000
	flag56             = 0x80000000
)

// ntlmDomain is the NetBIOS domain the challenge names.
const ntlmDomain = "EXAMPLE"

var ntlmSignature = []byte("NTLMSSP\x00")

// ntlmMessage decodes a base64 NTLM token, bare or wrapped in SPNEGO, and
// returns the message and its type.
func ntlmMessage(token string) ([]byte, uint32, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
	if err != nil {
		return nil, 0, errors.New("token is not base64")
	}
	i := bytes.Index(raw, ntlmSignature)
	if i < 0 || len(raw)-i < 12 {
		return nil, 0, errors.New("not an NTLM message")
	}
	m := raw[i:]
	return m, binary.LittleEndian.Uint32(m[8:12]), nil
}

// ntlmChallenge builds a CHALLENGE message ([MS-NLMP] 2.2.1.2) for the
// 8-byte server challenge, naming the domain and the server.
func ntlmChallenge(challenge []byte, server string) []byte {
	target := utf16le(ntlmDomain)
	var info []byte
	info = avPair(info, 2, utf16le(ntlmDomain)) // MsvAvNbDomainName
	info = avPair(info, 1, utf16le(server))     // MsvAvNbComputerName
	info = avPair(info, 0, nil)                 // MsvAvEOL
	const header = 48
	m := make([]byte, header, header+len(target)+len(info))
	copy(m, ntlmSignature)
	binary.LittleEndian.PutUint32(m[8:], 2)
	putField(m[12:], len(target), header)
	binary.LittleEndian.PutUint32(m[20:], flagUnicode|flagRequestTarget|flagNTLM|flagAlwaysSign|
		flagTargetDomain|flagExtendedSecure|flagTargetInfo|flag128|flag56)
	copy(m[24:32], challenge)
	putField(m[40:], len(info), header+len(target))
	m = append(m, target...)
	return append(m, info...)
}

func avPair(b []byte, id uint16, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, id)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// putField writes a security buffer: length, maximum length, offset.
func putField(b []byte, n, offset int) {
	binary.LittleEndian.PutUint16(b, uint16(n))
	binary.LittleEndian.PutUint16(b[2:], uint16(n))
	binary.LittleEndian.PutUint32(b[4:], uint32(offset))
}

// field reads the security buffer at off of message m.
func field(m []byte, off int) ([]byte, bool) {
	if off+8 > len(m) {
		return nil, false
	}
	n := int(binary.LittleEndian.Uint16(m[off:]))
	at := int(binary.LittleEndian.Uint32(m[off+4:]))
	if at < 0 || at+n > len(m) {
		return nil, false
	}
	return m[at : at+n], true
}

// ntlmVerify checks an AUTHENTICATE message ([MS-NLMP] 2.2.1.3) against
// the challenge this connection issued, with the users' passwords, and
// returns the user it proves.
func ntlmVerify(m, challenge []byte, users map[string]string) (string, error) {
	if len(m) < 64 {
		return "", errors.New("AUTHENTICATE message too short")
	}
	nt, ok1 := field(m, 20)
	dom, ok2 := field(m, 28)
	usr, ok3 := field(m, 36)
	if !ok1 || !ok2 || !ok3 {
		return "", errors.New("AUTHENTICATE message fields out of range")
	}
	unicode := binary.LittleEndian.Uint32(m[60:])&flagUnicode != 0
	user, domain := decodeString(usr, unicode), decodeString(dom, unicode)
	password, known := lookupUser(users, user)
	if !known {
		return "", errors.New("unknown user " + user)
	}
	if len(nt) <= 24 {
		return "", errors.New("not an NTLMv2 response")
	}
	// [MS-NLMP] 3.3.2: NTOWFv2 = HMAC_MD5(MD4(UNICODE(Passwd)),
	// UNICODE(Uppercase(User) + UserDom)); NTProofStr =
	// HMAC_MD5(NTOWFv2, ServerChallenge + temp).
	key := hmacMD5(md4(utf16le(password)), utf16le(strings.ToUpper(user)+domain))
	proof := hmacMD5(key, append(append([]byte(nil), challenge...), nt[16:]...))
	if !hmac.Equal(proof, nt[:16]) {
		return "", errors.New("wrong password for " + user)
	}
	return user, nil
}

// lookupUser finds a user without regard to case, as Windows does.
func lookupUser(users map[string]string, user string) (string, bool) {
	for u, p := range users {
		if strings.EqualFold(u, user) {
			return p, true
		}
	}
	return "", false
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func newChallenge() []byte {
	c := make([]byte, 8)
	rand.Read(c)
	return c
}

func hmacMD5(key, data []byte) []byte {
	h := hmac.New(md5.New, key)
	h.Write(data)
	return h.Sum(nil)
}

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func decodeString(b []byte, unicode bool) string {
	if !unicode {
		return string(b)
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// md4 is RFC 1320's digest, which NTLM's password hash needs and the
// standard library does not have.
func md4(msg []byte) []byte {
	n := len(msg)
	msg = append(append([]byte(nil), msg...), 0x80)
	for len(msg)%64 != 56 {
		msg = append(msg, 0)
	}
	msg = binary.LittleEndian.AppendUint64(msg, uint64(n)*8)
	h := [4]uint32{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}
	var x [16]uint32
	for ; len(msg) > 0; msg = msg[64:] {
		for i := range x {
			x[i] = binary.LittleEndian.Uint32(msg[4*i:])
		}
		a, b, c, d := h[0], h[1], h[2], h[3]
		for r, round := range md4Rounds {
			for i, k := range round.order {
				t := a + round.f(b, c, d) + x[k] + md4Const[r]
				a, b, c, d = d, bits.RotateLeft32(t, round.shift[i%4]), b, c
			}
		}
		h[0], h[1], h[2], h[3] = h[0]+a, h[1]+b, h[2]+c, h[3]+d
	}
	out := make([]byte, 0, 16)
	for _, v := range h {
		out = binary.LittleEndian.AppendUint32(out, v)
	}
	return out
}

var md4Const = [3]uint32{0, 0x5a827999, 0x6ed9eba1}

var md4Rounds = [3]struct {
	f     func(b, c, d uint32) uint32
	order [16]int
	shift [4]int
}{
	{func(b, c, d uint32) uint32 { return b&c | ^b&d }, [16]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, [4]int{3, 7, 11, 19}},
	{func(b, c, d uint32) uint32 { return b&c | b&d | c&d }, [16]int{0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15}, [4]int{3, 5, 9, 13}},
	{func(b, c, d uint32) uint32 { return b ^ c ^ d }, [16]int{0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15}, [4]int{3, 9, 11, 15}},
}
