package pop3

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// FuzzPreauth feeds arbitrary client bytes to the pre-auth state machine
// with no back-end reachable. Whatever arrives, gatehouse answers in whole
// CRLF lines, never more response lines than the client sent lines (plus
// greeting and goodbye, and the lists of CAPA and AUTH), and never logs
// anyone in.
func FuzzPreauth(f *testing.F) {
	for _, seed := range []string{
		"CAPA\r\nUSER alice\r\nPASS demo\r\nQUIT\r\n",
		"AUTH PLAIN AGFsaWNlAGRlbW8=\r\n",
		"AUTH PLAIN\r\n*\r\nAUTH LOGIN\r\nYWxpY2U=\r\nZGVtbw==\r\n",
		"AUTH LOGIN =\r\n\r\n!!\r\nAUTH\r\n",
		"STLS\r\nCAPA\r\n",
		"PASS x\r\nUSER\r\nAPOP a b\r\nRETR 1\r\n\x00\xff\r\n",
		"USER " + strings.Repeat("a", 2000) + "\r\n",
		"user a\npass b\nquit\n",
	} {
		f.Add([]byte(seed))
	}
	fe := &Frontend{Pool: &proxy.Pool{Name: "fuzz"}, Config: Config{MaxCommands: 50}, Link: proxy.Link{Log: quiet}}
	f.Fuzz(func(t *testing.T, script []byte) {
		c := wiretest.Script(script, 110)
		fe.ServeConn(context.Background(), c)
		out := c.Out.String()
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("answer does not end in CRLF: %q", out)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n")
		inLines := bytes.Count(script, []byte("\n")) + 1
		listed := strings.Count(out, "\r\nPLAIN\r\nLOGIN\r\n.\r\n")*3 + strings.Count(out, "+OK Capability list follows")*12
		if len(lines) > inLines+2+listed {
			t.Fatalf("%d answer lines for %d command lines: %q", len(lines), inLines, out)
		}
		for _, l := range lines {
			if strings.Contains(l, "Logged in") || strings.Contains(l, "has ") {
				t.Fatalf("a login succeeded with no back-end: %q", out)
			}
		}
	})
}
