package https

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// FuzzRequestHead feeds arbitrary bytes to the head reader and the request
// parser: they must refuse or accept, never panic, and an accepted request
// must have exactly one way to find its body's end, which no Connection
// header removes, no control character in a field or target, and a path
// with nothing left for IIS to resolve differently.
func FuzzRequestHead(f *testing.F) {
	for _, seed := range []string{
		"GET /owa/ HTTP/1.1\r\nHost: m\r\n\r\n",
		"POST /mapi/emsmdb/ HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"RPC_IN_DATA /rpc/rpcproxy.dll?a:6001 HTTP/1.1\r\nHost: m\r\nContent-Length: 1073741824\r\n\r\n",
		"GET http://m/x?y HTTP/1.0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 1, 1\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\nHost: m\n\n",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nConnection: Content-Length\r\nContent-Length: 92\r\n\r\n",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
		"GET /owa\\..\\ecp/ HTTP/1.1\r\nHost: test\r\n\r\n",
		"GET /owa/..%5cecp/ HTTP/1.1\r\nHost: test\r\n\r\n",
		"GET /%65cp%2fx HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	for _, c := range smugglingCorpus {
		f.Add([]byte(c.raw))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var r request
		if readHead(bufio.NewReaderSize(bytes.NewReader(in), 64), nil, 4096, &r.head) != nil {
			return
		}
		if r.parse() != nil {
			return
		}
		if r.kind == bodyFixed && r.length <= 0 || r.kind == bodyChunked && r.length != 0 {
			t.Errorf("accepted %q with body kind %d length %d", in, r.kind, r.length)
		}
		if name := r.nominatedFraming(); name != "" {
			t.Errorf("accepted %q whose Connection header removes %s", in, name)
		}
		for _, f := range r.hdrs {
			if !fieldText(f.value) {
				t.Errorf("accepted %q with a control character in %q", in, f.name)
			}
		}
		if strings.ContainsAny(r.canon, "\\%\x00") || strings.Contains(r.canon+"/", "/../") || strings.Contains(r.canon+"/", "/./") {
			t.Errorf("accepted %q whose path resolves to %q", in, r.canon)
		}
		_ = classifyPath(r.canon)
	})
}

// FuzzChunked checks that a chunked body is either refused or copied
// with its data intact: the copy decodes to what the original decodes to
// (line endings may become CRLF, nothing else changes).
func FuzzChunked(f *testing.F) {
	for _, seed := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"3;ext=1\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n",
		"ffffffffffffffff\r\n",
		"0\n\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		n, err := copyChunked(w, bufio.NewReaderSize(bytes.NewReader(in), 64))
		w.Flush()
		if err != nil {
			return
		}
		if int(n) != out.Len() || out.Len() > 2*len(in) {
			t.Fatalf("chunked %q copied as %q (%d)", in, out.Bytes(), n)
		}
		want, err1 := decoded(in)
		got, err2 := decoded(out.Bytes())
		if err1 != nil || err2 != nil || !bytes.Equal(want, got) {
			t.Errorf("chunked %q: data %q, copy's data %q (%v, %v)", in, want, got, err1, err2)
		}
		if line, ok := cleanFraming(out.Bytes()); !ok {
			t.Errorf("chunked %q copied with the framing line %q", in, line)
		}
	})
}

// cleanFraming walks a chunked body on its own (not with the code under
// test) and reports the first chunk-size or trailer line that is not
// CRLF-terminated or holds a control character but tab.
func cleanFraming(b []byte) ([]byte, bool) {
	next := func() ([]byte, bool) {
		i := bytes.Index(b, []byte("\r\n"))
		if i < 0 {
			return b, false
		}
		line := b[:i]
		b = b[i+2:]
		for _, c := range line {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return line, false
			}
		}
		return line, true
	}
	for {
		line, ok := next()
		if !ok {
			return line, false
		}
		hex, _, _ := bytes.Cut(line, []byte(";"))
		size, err := strconv.ParseInt(string(bytes.TrimRight(hex, " \t")), 16, 64)
		if err != nil || size < 0 || size+2 > int64(len(b)) && size != 0 {
			return line, false
		}
		if size == 0 {
			break
		}
		b = b[size+2:]
	}
	for {
		line, ok := next()
		if !ok || len(line) == 0 {
			return line, ok
		}
	}
}

// decoded returns the data of a chunked body.
func decoded(body []byte) ([]byte, error) {
	var plain bytes.Buffer
	w := bufio.NewWriter(&plain)
	_, err := dechunk(w, bufio.NewReaderSize(bytes.NewReader(body), 64))
	w.Flush()
	return plain.Bytes(), err
}
