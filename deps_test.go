package gatehouse

import (
	"os/exec"
	"strings"
	"testing"
)

// The library links no test back-end: the demo and its servers live in
// internal/demo, which only the command imports.
func TestLibraryLinksNoTestBackend(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasSuffix(p, "test") || strings.Contains(p, "/internal/demo") {
			t.Errorf("the gatehouse package links %s", p)
		}
	}
}
