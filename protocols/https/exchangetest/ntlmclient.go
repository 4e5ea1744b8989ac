package exchangetest

import (
	"encoding/binary"
	"errors"
	"strings"
	"time"
)

// NTLMNegotiate returns the base64 NEGOTIATE message that opens an NTLM
// handshake, for clients in tests ("Authorization: NTLM " + it).
func NTLMNegotiate() string {
	m := append([]byte(nil), ntlmSignature...)
	m = binary.LittleEndian.AppendUint32(m, 1)
	m = binary.LittleEndian.AppendUint32(m, flagUnicode|flagRequestTarget|flagNTLM|flagAlwaysSign|flagExtendedSecure)
	m = append(m, make([]byte, 16)...) // no domain, no workstation
	return b64(m)
}

// NTLMAuthenticate returns the base64 AUTHENTICATE message that answers
// the server's base64 CHALLENGE with an NTLMv2 response ([MS-NLMP]
// 3.3.2) for user ("DOMAIN\user" or "user") and password, for clients in
// tests.
func NTLMAuthenticate(challenge, user, password string) (string, error) {
	m, typ, err := ntlmMessage(challenge)
	if err != nil || typ != 2 || len(m) < 48 {
		return "", errors.New("not an NTLM CHALLENGE message")
	}
	info, ok := field(m, 40)
	if !ok {
		return "", errors.New("CHALLENGE target information out of range")
	}
	domain, name, found := strings.Cut(user, `\`)
	if !found {
		domain, name = "", user
	}
	key := hmacMD5(md4(utf16le(password)), utf16le(strings.ToUpper(name)+domain))
	clientChallenge := newChallenge()
	temp := []byte{1, 1, 0, 0, 0, 0, 0, 0}
	temp = binary.LittleEndian.AppendUint64(temp, uint64(time.Now().UnixNano()/100+116444736000000000))
	temp = append(temp, clientChallenge...)
	temp = append(append(append(temp, 0, 0, 0, 0), info...), 0, 0, 0, 0)
	serverChallenge := m[24:32]
	nt := append(hmacMD5(key, append(append([]byte(nil), serverChallenge...), temp...)), temp...)
	lm := append(hmacMD5(key, append(append([]byte(nil), serverChallenge...), clientChallenge...)), clientChallenge...)
	return b64(authenticateMessage(lm, nt, utf16le(domain), utf16le(name))), nil
}

// authenticateMessage lays out an AUTHENTICATE message ([MS-NLMP]
// 2.2.1.3) without version, workstation or session key.
func authenticateMessage(lm, nt, domain, user []byte) []byte {
	const header = 64
	m := make([]byte, header)
	copy(m, ntlmSignature)
	binary.LittleEndian.PutUint32(m[8:], 3)
	off := header
	for _, f := range []struct {
		at int
		b  []byte
	}{{12, lm}, {20, nt}, {28, domain}, {36, user}, {44, nil}, {52, nil}} {
		putField(m[f.at:], len(f.b), off)
		m = append(m, f.b...)
		off += len(f.b)
	}
	binary.LittleEndian.PutUint32(m[60:], flagUnicode|flagNTLM|flagAlwaysSign|flagExtendedSecure|flagTargetInfo)
	return m
}
