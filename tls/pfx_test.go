package tls

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/pkcs12"
)

// An independent decoder (x/crypto/pkcs12) must read back the key and the
// whole chain, and refuse a wrong password (the MAC check).
func TestPFXDecodes(t *testing.T) {
	ca := newTestCA(t, "pfx test CA")
	leaf := ca.issue(t, "mail.example.test")
	chain := [][]byte{leaf.Certificate[0], ca.cert.Raw}

	pfx, err := encodePFX(leaf.PrivateKey, chain, "s3cret-ü")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := pkcs12.ToPEM(pfx, "s3cret-ü")
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	var certs [][]byte
	var key any
	for _, b := range blocks {
		switch b.Type {
		case "CERTIFICATE":
			certs = append(certs, b.Bytes)
		case "PRIVATE KEY":
			if key, err = x509.ParsePKCS8PrivateKey(b.Bytes); err != nil {
				key, err = x509.ParseECPrivateKey(b.Bytes)
			}
			if err != nil {
				t.Fatalf("key: %v", err)
			}
		}
	}
	if len(certs) != 2 || !bytes.Equal(certs[0], chain[0]) || !bytes.Equal(certs[1], chain[1]) {
		t.Fatalf("got %d certificates, want the leaf and the CA in order", len(certs))
	}
	if !key.(*ecdsa.PrivateKey).Equal(leaf.PrivateKey) {
		t.Fatal("decoded key differs from the encoded one")
	}
	if _, err := pkcs12.ToPEM(pfx, "wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
}

// OpenSSL, the tool administrators use to inspect PFX files, reads it too.
func TestPFXOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not found: install the Debian package openssl")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := newTestCA(t, "pfx test CA")
	leaf := ca.issueKey(t, key, "mail.example.test")
	pfx, err := encodePFX(key, [][]byte{leaf.Certificate[0]}, "pw")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cert.pfx")
	if err := os.WriteFile(file, pfx, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "pkcs12", "-in", file, "-passin", "pass:pw", "-nodes").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkcs12: %v\n%s", err, out)
	}
	block, _ := pem.Decode(out[bytes.Index(out, []byte("-----BEGIN CERTIFICATE")):])
	if block == nil || !bytes.Equal(block.Bytes, leaf.Certificate[0]) {
		t.Fatalf("openssl did not print the leaf:\n%s", out)
	}
}

// The key derivation gives the outputs x/crypto/pkcs12 tests its own
// derivation against, including the case where a block gets a leading zero.
func TestPKCS12KDFVectors(t *testing.T) {
	for _, tc := range []struct {
		salt, pw, want string
	}{
		{"\xff\xff\xff\xff\xff\xff\xff\xff", string(bmpString("sesame")),
			"\x7c\xd9\xfd\x3e\x2b\x3b\xe7\x69\x1a\x44\xe3\xbe\xf0\xf9\xea\x0f\xb9\xb8\x97\xd4\xe3\x25\xd9\xd1"},
		{"\xf3\x7e\x05\xb5\x18\x32\x4b\x4b", "\x00\x00",
			"\x00\xf7\x59\xff\x47\xd1\x4d\xd0\x36\x65\xd5\x94\x3c\xb3\xc4\xa3\x9a\x25\x55\xc0\x2a\xed\x66\xe1"},
	} {
		got := pkcs12KDF(1, []byte(tc.salt), []byte(tc.pw), 2048, 24)
		if !bytes.Equal(got, []byte(tc.want)) {
			t.Errorf("kdf(%x) = %x, want %x", tc.salt, got, tc.want)
		}
	}
}
