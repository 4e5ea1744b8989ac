package https

import (
	"bufio"
	"bytes"
	"testing"
)

// FuzzRequestHead feeds arbitrary bytes to the head reader and the request
// parser: they must refuse or accept, never panic, and an accepted request
// must have exactly one way to find its body's end.
func FuzzRequestHead(f *testing.F) {
	for _, seed := range []string{
		"GET /owa/ HTTP/1.1\r\nHost: m\r\n\r\n",
		"POST /mapi/emsmdb/ HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"RPC_IN_DATA /rpc/rpcproxy.dll?a:6001 HTTP/1.1\r\nHost: m\r\nContent-Length: 1073741824\r\n\r\n",
		"GET http://m/x?y HTTP/1.0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 1, 1\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\nHost: m\n\n",
	} {
		f.Add([]byte(seed))
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
	})
}

// decoded returns the data of a chunked body.
func decoded(body []byte) ([]byte, error) {
	var plain bytes.Buffer
	w := bufio.NewWriter(&plain)
	_, err := dechunk(w, bufio.NewReaderSize(bytes.NewReader(body), 64))
	w.Flush()
	return plain.Bytes(), err
}
