package tls

import (
	"context"
	stdtls "crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// hookTimeout bounds one run of the on_renew command.
const hookTimeout = 5 * time.Minute

// hookOutputMax is how much of the command's output is logged (its end).
const hookOutputMax = 4096

// renewal is a certificate just obtained, renewed or generated.
type renewal struct {
	cert     stdtls.Certificate
	certFile string // PEM chain on disk
	keyFile  string // PEM key on disk
	pfxKey   string // storage key for the PKCS#12 copy
}

// runOnRenew writes the PKCS#12 copy and runs the on_renew command, if one
// is configured. Its output is logged; its failure is logged and otherwise
// ignored.
func (m *Manager) runOnRenew(ctx context.Context, r renewal) {
	argv := m.cfg.OnRenew
	if len(argv) == 0 {
		return
	}
	names := strings.Join(certNames(r.cert.Leaf), ",")
	log := m.log.With("command", argv[0], "names", names)
	pfxFile, password, err := m.writePFX(ctx, r)
	if err != nil {
		log.Warn("on_renew: no PFX file written", "err", err)
	}
	ctx, cancel := context.WithTimeout(ctx, hookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(),
		"GATEHOUSE_CERT_FILE="+r.certFile,
		"GATEHOUSE_KEY_FILE="+r.keyFile,
		"GATEHOUSE_PFX_FILE="+pfxFile,
		"GATEHOUSE_PFX_PASSWORD="+password,
		"GATEHOUSE_CERT_NAMES="+names)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		log.Error("on_renew command failed", "err", err, "output", tail(out))
		return
	}
	log.Info("on_renew command done", "output", tail(out))
}

// writePFX stores a PKCS#12 copy of the certificate under a fresh random
// password, and returns its file name and password.
func (m *Manager) writePFX(ctx context.Context, r renewal) (file, password string, err error) {
	password = randomHex(16)
	pfx, err := encodePFX(r.cert.PrivateKey, r.cert.Certificate, password)
	if err != nil {
		return "", "", err
	}
	if err := m.storage.Store(ctx, r.pfxKey, pfx); err != nil {
		return "", "", fmt.Errorf("storing %s: %w", r.pfxKey, err)
	}
	return m.storage.Filename(r.pfxKey), password, nil
}

// tail returns the last hookOutputMax bytes of out, trimmed.
func tail(out []byte) string {
	if len(out) > hookOutputMax {
		out = out[len(out)-hookOutputMax:]
	}
	return strings.TrimSpace(string(out))
}
