// Package tls holds gatehouse's TLS: certificate sets (ACME through certmagic,
// static files reloaded when they change, or a local CA for development), the
// policy every listener speaks, client TLS towards back-ends, and the STARTTLS
// upgrade helpers that every mail frontend uses.
//
// Invariants kept here:
//
//   - Listeners speak TLS 1.2 or 1.3 only; TLS 1.2 is limited to ECDHE key
//     exchange with AEAD ciphers.
//   - A STARTTLS upgrade never carries plaintext across: bytes buffered after
//     the STARTTLS command (or the back-end's go-ahead) are thrown away and
//     counted, never parsed (CVE-2011-0411, RFC 3207 section 4.2).
//   - Certificate management never asks questions on standard input, and never
//     reads or writes certmagic's package-level defaults: each Manager has its
//     own certmagic Config and Cache.
//   - A certificate file that fails to reload leaves the previous certificate
//     in service; established sessions are never dropped by a reload.
//
// Inside this package crypto/tls is imported as stdtls.
//
// It imports no other gatehouse package; the frontends, the health
// probes and the gatehouse package import it.
package tls
