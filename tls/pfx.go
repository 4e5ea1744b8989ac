package tls

// A PKCS#12 (PFX) encoder, because no module gatehouse uses writes one
// (golang.org/x/crypto/pkcs12 only decodes). It writes the profile that every
// Windows Server running Exchange imports, and that OpenSSL 1.x wrote by
// default: certificates and key encrypted with pbeWithSHAAnd3-KeyTripleDES-CBC
// and integrity by HMAC-SHA-1, keys derived with the PKCS#12 KDF (RFC 7292
// appendix B). The file sits beside the PEM key it copies, in the private
// storage directory; its password protects it in transit to the hook's
// target, not at rest.

import (
	"crypto"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"unicode/utf16"
)

var (
	oidData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEncryptedData     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidShroudedKeyBag    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidCertBag           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}
	oidX509Certificate   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 22, 1}
	oidLocalKeyID        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 21}
	oidPBEWithSHA3DESCBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 3}
	oidSHA1              = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
)

// pfxIterations is the KDF iteration count for encryption and MAC.
const pfxIterations = 2048

// RFC 7292 structures, named as in the RFC.
type (
	pfxPDU struct {
		Version  int
		AuthSafe contentInfo
		MacData  macData
	}
	contentInfo struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
	}
	encryptedData struct {
		Version              int
		EncryptedContentInfo encryptedContentInfo
	}
	encryptedContentInfo struct {
		ContentType                asn1.ObjectIdentifier
		ContentEncryptionAlgorithm pkix.AlgorithmIdentifier
		EncryptedContent           []byte `asn1:"tag:0,optional"`
	}
	safeBag struct {
		ID         asn1.ObjectIdentifier
		Value      asn1.RawValue     `asn1:"tag:0,explicit"`
		Attributes []pkcs12Attribute `asn1:"set,optional"`
	}
	pkcs12Attribute struct {
		ID    asn1.ObjectIdentifier
		Value asn1.RawValue `asn1:"set"`
	}
	certBag struct {
		ID   asn1.ObjectIdentifier
		Data []byte `asn1:"tag:0,explicit"`
	}
	encryptedPrivateKeyInfo struct {
		Algorithm     pkix.AlgorithmIdentifier
		EncryptedData []byte
	}
	pbeParams struct {
		Salt       []byte
		Iterations int
	}
	macData struct {
		Mac        digestInfo
		MacSalt    []byte
		Iterations int
	}
	digestInfo struct {
		Algorithm pkix.AlgorithmIdentifier
		Digest    []byte
	}
)

// encodePFX returns a PKCS#12 file holding key and chain (DER, leaf first),
// protected by password.
func encodePFX(key crypto.PrivateKey, chain [][]byte, password string) ([]byte, error) {
	if len(chain) == 0 {
		return nil, errors.New("pfx: no certificate")
	}
	pw := bmpString(password)
	keyID := sha1.Sum(chain[0])
	certs, err := certSafe(chain, keyID[:], pw)
	if err != nil {
		return nil, err
	}
	keys, err := keySafe(key, keyID[:], pw)
	if err != nil {
		return nil, err
	}
	authSafe, err := asn1.Marshal([]contentInfo{certs, keys})
	if err != nil {
		return nil, fmt.Errorf("pfx: %w", err)
	}
	mac, err := pfxMAC(authSafe, pw)
	if err != nil {
		return nil, err
	}
	data, err := asn1.Marshal(authSafe)
	if err != nil {
		return nil, fmt.Errorf("pfx: %w", err)
	}
	return asn1.Marshal(pfxPDU{
		Version:  3,
		AuthSafe: contentInfo{ContentType: oidData, Content: explicit0(data)},
		MacData:  mac,
	})
}

// certSafe returns the encrypted SafeContents holding one CertBag per
// certificate; the leaf's carries localKeyID.
func certSafe(chain [][]byte, localKeyID, pw []byte) (contentInfo, error) {
	bags := make([]safeBag, 0, len(chain))
	for i, der := range chain {
		value, err := asn1.Marshal(certBag{ID: oidX509Certificate, Data: der})
		if err != nil {
			return contentInfo{}, fmt.Errorf("pfx: %w", err)
		}
		bag := safeBag{ID: oidCertBag, Value: explicit0(value)}
		if i == 0 {
			if bag.Attributes, err = keyIDAttribute(localKeyID); err != nil {
				return contentInfo{}, err
			}
		}
		bags = append(bags, bag)
	}
	plain, err := asn1.Marshal(bags)
	if err != nil {
		return contentInfo{}, fmt.Errorf("pfx: %w", err)
	}
	alg, sealed, err := pbeEncrypt(plain, pw)
	if err != nil {
		return contentInfo{}, err
	}
	enc, err := asn1.Marshal(encryptedData{EncryptedContentInfo: encryptedContentInfo{
		ContentType: oidData, ContentEncryptionAlgorithm: alg, EncryptedContent: sealed,
	}})
	if err != nil {
		return contentInfo{}, fmt.Errorf("pfx: %w", err)
	}
	return contentInfo{ContentType: oidEncryptedData, Content: explicit0(enc)}, nil
}

// keySafe returns the plain SafeContents holding the key, itself encrypted
// in a PKCS8ShroudedKeyBag.
func keySafe(key crypto.PrivateKey, localKeyID, pw []byte) (contentInfo, error) {
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return contentInfo{}, fmt.Errorf("pfx: private key: %w", err)
	}
	alg, sealed, err := pbeEncrypt(pkcs8, pw)
	if err != nil {
		return contentInfo{}, err
	}
	value, err := asn1.Marshal(encryptedPrivateKeyInfo{Algorithm: alg, EncryptedData: sealed})
	if err != nil {
		return contentInfo{}, fmt.Errorf("pfx: %w", err)
	}
	attrs, err := keyIDAttribute(localKeyID)
	if err != nil {
		return contentInfo{}, err
	}
	safe, err := asn1.Marshal([]safeBag{{
		ID: oidShroudedKeyBag, Value: explicit0(value), Attributes: attrs,
	}})
	if err != nil {
		return contentInfo{}, fmt.Errorf("pfx: %w", err)
	}
	data, err := asn1.Marshal(safe)
	if err != nil {
		return contentInfo{}, fmt.Errorf("pfx: %w", err)
	}
	return contentInfo{ContentType: oidData, Content: explicit0(data)}, nil
}

// explicit0 wraps der in the [0] EXPLICIT tag that the RFC 7292 structures
// put around their ANY fields (encoding/asn1 writes a RawValue as it is,
// ignoring the field's tag).
func explicit0(der []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: der}
}

// keyIDAttribute returns the localKeyID attribute that ties the leaf to its key.
func keyIDAttribute(id []byte) ([]pkcs12Attribute, error) {
	value, err := asn1.Marshal(id)
	if err != nil {
		return nil, fmt.Errorf("pfx: %w", err)
	}
	return []pkcs12Attribute{{
		ID:    oidLocalKeyID,
		Value: asn1.RawValue{Tag: asn1.TagSet, IsCompound: true, Bytes: value},
	}}, nil
}

// pbeEncrypt encrypts plain with pbeWithSHAAnd3-KeyTripleDES-CBC under a
// fresh salt, and returns the algorithm identifier that names it.
func pbeEncrypt(plain, pw []byte) (pkix.AlgorithmIdentifier, []byte, error) {
	salt := make([]byte, 8)
	if _, err := rand.Read(salt); err != nil {
		return pkix.AlgorithmIdentifier{}, nil, fmt.Errorf("pfx: salt: %w", err)
	}
	params, err := asn1.Marshal(pbeParams{Salt: salt, Iterations: pfxIterations})
	if err != nil {
		return pkix.AlgorithmIdentifier{}, nil, fmt.Errorf("pfx: %w", err)
	}
	block, err := des.NewTripleDESCipher(pkcs12KDF(1, salt, pw, pfxIterations, 24))
	if err != nil {
		return pkix.AlgorithmIdentifier{}, nil, fmt.Errorf("pfx: %w", err)
	}
	iv := pkcs12KDF(2, salt, pw, pfxIterations, block.BlockSize())
	pad := block.BlockSize() - len(plain)%block.BlockSize()
	sealed := make([]byte, len(plain), len(plain)+pad)
	copy(sealed, plain)
	for range pad {
		sealed = append(sealed, byte(pad))
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(sealed, sealed)
	alg := pkix.AlgorithmIdentifier{Algorithm: oidPBEWithSHA3DESCBC, Parameters: asn1.RawValue{FullBytes: params}}
	return alg, sealed, nil
}

// pfxMAC computes the HMAC-SHA-1 of the authenticated safe.
func pfxMAC(authSafe, pw []byte) (macData, error) {
	salt := make([]byte, 8)
	if _, err := rand.Read(salt); err != nil {
		return macData{}, fmt.Errorf("pfx: salt: %w", err)
	}
	h := hmac.New(sha1.New, pkcs12KDF(3, salt, pw, pfxIterations, sha1.Size))
	h.Write(authSafe)
	return macData{
		Mac: digestInfo{
			Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidSHA1, Parameters: asn1.NullRawValue},
			Digest:    h.Sum(nil),
		},
		MacSalt:    salt,
		Iterations: pfxIterations,
	}, nil
}

// pkcs12KDF derives size bytes of key material for purpose id (1 key, 2 IV,
// 3 MAC key) with SHA-1, as RFC 7292 appendix B.2 describes.
func pkcs12KDF(id byte, salt, pw []byte, iterations, size int) []byte {
	const u, v = sha1.Size, 64 // hash output and block length
	d := make([]byte, v)
	for i := range d {
		d[i] = id
	}
	in := append(repeatTo(salt, v), repeatTo(pw, v)...) // I = S || P
	out := make([]byte, 0, size+u)
	for len(out) < size {
		a := sha1.Sum(append(append([]byte(nil), d...), in...))
		for range iterations - 1 {
			a = sha1.Sum(a[:])
		}
		out = append(out, a[:]...)
		b := repeatTo(a[:], v)
		for j := 0; j < len(in); j += v {
			addPlusOne(in[j:j+v], b) // I_j = (I_j + B + 1) mod 2^(8v)
		}
	}
	return out[:size]
}

// repeatTo repeats x up to the next multiple of v bytes (empty stays empty).
func repeatTo(x []byte, v int) []byte {
	if len(x) == 0 {
		return nil
	}
	out := make([]byte, v*((len(x)+v-1)/v))
	for i := range out {
		out[i] = x[i%len(x)]
	}
	return out
}

// addPlusOne sets block to block + b + 1, big-endian, dropping the carry.
func addPlusOne(block, b []byte) {
	carry := 1
	for k := len(block) - 1; k >= 0; k-- {
		sum := int(block[k]) + int(b[k]) + carry
		block[k] = byte(sum)
		carry = sum >> 8
	}
}

// bmpString encodes s as a NUL-terminated big-endian UTF-16 string, the
// password form the PKCS#12 KDF takes.
func bmpString(s string) []byte {
	units := utf16.Encode([]rune(s))
	out := make([]byte, 0, 2*len(units)+2)
	for _, u := range units {
		out = append(out, byte(u>>8), byte(u))
	}
	return append(out, 0, 0)
}
