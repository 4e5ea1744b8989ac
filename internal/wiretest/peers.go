package wiretest

import (
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"
)

// NeedTool returns the path of a real peer's binary, or fails the test
// naming the Debian package that provides it.
func NeedTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (%v): install the Debian package %s", name, err, pkg)
	}
	return p
}

// Python runs script with python3 and the arguments after it, for at most
// 20 seconds, and decodes the JSON it prints into v. A failed run or
// anything else printed fails the test.
func Python(t testing.TB, v any, script string, args ...string) {
	t.Helper()
	py := NeedTool(t, "python3", "python3")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, append([]string{"-c", script}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 %q: %v\n%s", args, err, out)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("python3 %q printed %q: %v", args, out, err)
	}
}

// Curl fetches url with curl as user, password "demo", with TLS required
// and Certificate trusted, for at most 10 seconds; it returns what curl
// printed.
func Curl(t testing.TB, url, user string) ([]byte, error) {
	t.Helper()
	curl := NeedTool(t, "curl", "curl")
	return exec.Command(curl, "-sS", "--max-time", "10", "--ssl-reqd", "--cacert", CertPEM(t), "-u", user+":demo", url).CombinedOutput()
}
