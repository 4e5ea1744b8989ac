package imap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

var fuzzSeeds = []string{
	"a CAPABILITY\r\nb NOOP\r\nc LOGIN alice demo\r\nd LOGOUT\r\n",
	"a LOGIN {5}\r\nalice {4+}\r\ndemo\r\n",
	`a LOGIN "al\"ice" "de\\mo"` + "\r\n",
	"a AUTHENTICATE PLAIN AGFsaWNlAGRlbW8=\r\nb AUTHENTICATE LOGIN\r\nYWxpY2U=\r\n*\r\n",
	`a ID ("name" "x" "x-originating-ip" "1.2.3.4" "os" NIL)` + "\r\nb ID NIL\r\n",
	"a STARTTLS\r\nb LOGIN a b\r\n",
	"a LOGIN {99999999}\r\n",
	"a LOGIN {4294967296+}\r\n",
	"+ x\r\n* y\r\n\r\n(a) b\r\na ID ((((\r\n",
	"a LOGIN " + strings.Repeat("x", 3000) + "\r\n",
}

// FuzzParser checks the command reader on arbitrary bytes: it returns
// commands with a tag and a name, literals within the limit, or an error,
// and never reads past a literal it refused.
func FuzzParser(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		p := &parser{r: bufio.NewReaderSize(bytes.NewReader(script), 256), maxLiteral: 64, ready: func() error { return nil }}
		for range 100 {
			cmd, err := p.readCommand()
			var bad *badError
			switch {
			case errors.As(err, &bad):
				if bad.tag == "" {
					t.Fatal("BAD without a tag")
				}
				continue
			case err != nil:
				return
			}
			if cmd.tag == "" || cmd.name == "" || strings.ToUpper(cmd.name) != cmd.name {
				t.Fatalf("command %+v", cmd)
			}
			checkArgs(t, cmd.args, 0)
		}
	})
}

func checkArgs(t *testing.T, args []arg, depth int) {
	if depth > 2 {
		t.Fatalf("lists nested %d deep", depth)
	}
	for _, a := range args {
		if a.kind == kindString && len(a.s) > 64+256 {
			t.Fatalf("a string of %d bytes passed the limits", len(a.s))
		}
		checkArgs(t, a.list, depth+1)
	}
}

// FuzzPreauth feeds arbitrary client bytes to the pre-auth state machine
// with no back-end reachable: every answer is untagged, a continuation, or
// carries a tag the client sent, and nobody is logged in.
func FuzzPreauth(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	fe := &Frontend{Pool: &proxy.Pool{Name: "fuzz"}, Config: Config{MaxCommands: 50}, Link: proxy.Link{Log: quiet}}
	f.Fuzz(func(t *testing.T, script []byte) {
		c := wiretest.Script(script, 143)
		fe.ServeConn(context.Background(), c)
		out := c.Out.String()
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("answer does not end in CRLF: %q", out)
		}
		for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
			tag, rest, _ := strings.Cut(l, " ")
			switch {
			case tag == "*" || tag == "+":
			case !bytes.Contains(script, []byte(tag)):
				t.Fatalf("answer %q carries a tag the client never sent", l)
			case strings.HasPrefix(rest, "OK") && strings.Contains(rest, "Logged in"):
				t.Fatalf("a login succeeded with no back-end: %q", l)
			}
		}
	})
}
