//go:build linux

package proxy

import (
	"path/filepath"
	"strings"
	"testing"
)

// CheckMapFile refuses what NewRouter refuses, with the same message, and
// accepts what it accepts.
func TestCheckMapFileAgreesWithNewRouter(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"good", "alice mail1\n@example.com mail2\n", ""},
		{"unknown back-end", "alice nosuch\n", `line 1: back-end "nosuch" is not in listener mail`},
		{"malformed", "\nalice\n", "line 2: want"},
		{"missing", "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users.map")
			if tc.name != "missing" {
				writeRouteMap(t, path, tc.body, 0)
			}
			checked := CheckMapFile(path, "mail", []string{"mail1", "mail2"})
			_, built := NewRouter(RouteConfig{By: RouteMap, File: path}, routePool(2), routeQuiet)
			if tc.want == "" {
				if checked != nil || built != nil {
					t.Fatalf("a good map: CheckMapFile %v, NewRouter %v", checked, built)
				}
				return
			}
			if checked == nil || !strings.Contains(checked.Error(), tc.want) {
				t.Errorf("CheckMapFile = %v, want it to contain %q", checked, tc.want)
			}
			if built == nil || !strings.Contains(built.Error(), tc.want) {
				t.Errorf("NewRouter = %v, want it to contain %q", built, tc.want)
			}
		})
	}
}
