package smtp

import (
	"bufio"
	"bytes"
	"net/textproto"
	"strings"
	"testing"
)

// wireData returns what goes on the wire for data written in chunks of
// size step: through a stuffer when fast, else through textproto's
// DotWriter alone, as go-smtp's client would send it. The end of data is
// the DotWriter's in both cases.
func wireData(data []byte, step int, fast bool) []byte {
	var wire bytes.Buffer
	dot := textproto.NewWriter(bufio.NewWriter(&wire)).DotWriter()
	var w interface{ Write([]byte) (int, error) } = dot
	var st *stuffer
	if fast {
		st = newStuffer(&wire, dot)
		w = st
	}
	for len(data) > 0 {
		n := min(step, len(data))
		w.Write(data[:n])
		data = data[n:]
	}
	if st != nil {
		st.finish()
		st.release()
	}
	dot.Close()
	return wire.Bytes()
}

// The stuffer's bytes are textproto's, whatever the data and however it
// is cut into writes.
func TestStufferMatchesTextproto(t *testing.T) {
	for _, data := range []string{
		"", "x", "\r\n", ".", ".\r\n", "Subject: a\r\n\r\n.leading dot\r\nend\r\n",
		"bare\nLF\n.\n", "cr\r\r\nodd\r\r\r\n", "no end of line", "\r", "\n\n\n",
		strings.Repeat("0123456789\r\n", 5000), ".\r\n.\r\n..\r\n", "a\r\n.\rb\r\n",
		strings.Repeat("y", maxPendingLine+100) + "\r\n.after\r\n",
	} {
		want := wireData([]byte(data), len(data)+1, false)
		for _, step := range []int{1, 2, 3, 7, 100, 16 << 10, len(data) + 1} {
			if got := wireData([]byte(data), step, true); !bytes.Equal(got, want) {
				t.Errorf("data %.40q in writes of %d:\n got %.80q\nwant %.80q", data, step, got, want)
			}
		}
	}
}

// FuzzStuffer compares the stuffer with textproto's DotWriter on any data
// cut into any writes: the end of data must never be forged.
func FuzzStuffer(f *testing.F) {
	for _, seed := range []string{"", "a\r\n.b\r\n", "\n.\n", "\r.\r\n", ".\r\r\n", "x\ny\r\nz"} {
		f.Add([]byte(seed), uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		n := int(step%64) + 1
		if got, want := wireData(data, n, true), wireData(data, n, false); !bytes.Equal(got, want) {
			t.Fatalf("data %q in writes of %d:\n got %q\nwant %q", data, n, got, want)
		}
	})
}
