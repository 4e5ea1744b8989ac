package https

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
	"github.com/gatehouse-proxy/gatehouse/proxy"
)

// smuggled is the request hidden in the body of the attacks: to
// ECP, which the corpus's listener keeps internal, claiming another
// client address.
const smuggled = "GET /ecp/x HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\r\n"

// smugglingCase is one entry of the request-smuggling corpus: bytes a
// client sends (then it closes its side), the statuses gatehouse answers,
// and the requests ("METHOD path") the back-end must have parsed.
type smugglingCase struct {
	name      string
	raw       string
	statuses  []int
	forwarded []string
}

// smugglingCorpus holds every framing, header and path trick gatehouse
// refuses or normalises, and a few well-formed requests that must pass.
var smugglingCorpus = []smugglingCase{
	// The attacks: a Connection header naming a framing header.
	{"connection names content-length (issue bytes)",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nConnection: Content-Length\r\nContent-Length: 92\r\n\r\n" + smuggled,
		[]int{400}, nil},
	{"connection names content-length, exact length",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nConnection: Content-Length\r\nContent-Length: 81\r\n\r\n" + smuggled,
		[]int{400}, nil},
	{"connection names transfer-encoding",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n51\r\n" + smuggled + "\r\n0\r\n\r\n",
		[]int{400}, nil},
	{"connection names transfer-encoding, lower case in a list",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nconnection: keep-alive, transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n51\r\n" + smuggled + "\r\n0\r\n\r\n",
		[]int{400}, nil},
	{"connection names host",
		"GET /owa/ HTTP/1.1\r\nHost: test\r\nConnection: Host\r\n\r\n", []int{400}, nil},
	// Transfer-Encoding other than exactly chunked.
	{"transfer-encoding identity, chunked",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: identity, chunked\r\n\r\n51\r\n" + smuggled + "\r\n0\r\n\r\n",
		[]int{400}, nil},
	{"transfer-encoding chunked, chunked",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked, chunked\r\n\r\n51\r\n" + smuggled + "\r\n0\r\n\r\n",
		[]int{400}, nil},
	{"two transfer-encoding headers",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		[]int{400}, nil},
	{"transfer-encoding chunked, gzip",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", []int{400}, nil},
	{"transfer-encoding with a vertical tab",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: \vchunked\r\n\r\n0\r\n\r\n", []int{400}, nil},
	{"chunked on HTTP/1.0",
		"POST /owa/a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []int{400}, nil},
	// Content-Length.
	{"content-length and transfer-encoding",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n51\r\n" + smuggled + "\r\n0\r\n\r\n",
		[]int{400}, nil},
	{"two identical content-lengths",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", []int{400}, nil},
	{"two differing content-lengths",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nContent-Length: 81\r\n\r\n" + smuggled, []int{400}, nil},
	{"content-length list",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nContent-Length: 5, 5\r\n\r\nhello", []int{400}, nil},
	{"signed content-length",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nContent-Length: +5\r\n\r\nhello", []int{400}, nil},
	// Header syntax.
	{"obs-fold",
		"GET /owa/ HTTP/1.1\r\nHost: test\r\nX-A: 1\r\n 2\r\n\r\n", []int{400}, nil},
	{"obs-fold of transfer-encoding",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", []int{400}, nil},
	{"bare CR in a header",
		"GET /owa/ HTTP/1.1\r\nHost: test\rX-Forwarded-For: 6.6.6.6\r\n\r\n", []int{400}, nil},
	{"NUL in a header",
		"GET /owa/ HTTP/1.1\r\nHost: test\r\nX-A: a\x00b\r\n\r\n", []int{400}, nil},
	{"control character in a header value",
		"GET /owa/ HTTP/1.1\r\nHost: test\r\nX-A: a\x01b\r\n\r\n", []int{400}, nil},
	{"space before colon",
		"GET /owa/ HTTP/1.1\r\nHost : test\r\n\r\n", []int{400}, nil},
	{"no host", "GET /owa/ HTTP/1.1\r\n\r\n", []int{400}, nil},
	{"two hosts", "GET /owa/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", []int{400}, nil},
	{"two hosts on HTTP/1.0", "GET /owa/ HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", []int{400}, nil},
	{"control character in the target", "GET /owa/\x01 HTTP/1.1\r\nHost: test\r\n\r\n", []int{400}, nil},
	{"101 headers pass",
		"GET /owa/ HTTP/1.1\r\nHost: test\r\n" + strings.Repeat("X-H: v\r\n", 100) + "\r\n", []int{200}, []string{"GET /owa/"}},
	{"102 headers refused",
		"GET /owa/ HTTP/1.1\r\nHost: test\r\n" + strings.Repeat("X-H: v\r\n", 101) + "\r\n", []int{431}, nil},
	{"5000 headers refused",
		"GET /owa/ HTTP/1.1\r\nHost: test\r\n" + strings.Repeat("X: v\r\n", 5000) + "\r\n", []int{431}, nil},
	{"bare LF line ends pass, forwarded with CRLF",
		"GET /owa/ HTTP/1.1\nHost: test\n\n", []int{200}, []string{"GET /owa/"}},
	// Chunked bodies: extensions and trailers with bare CR, LF or NUL.
	{"chunk extension with bare CR",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\rc\r\nhello\r\n0\r\n\r\n",
		[]int{400}, nil},
	{"chunk extension with NUL",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\x00\r\nhello\r\n0\r\n\r\n",
		[]int{400}, nil},
	{"trailer with bare CR",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n",
		[]int{400}, nil},
	{"trailer with NUL",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n",
		[]int{400}, nil},
	{"malformed chunk size",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + smuggled,
		[]int{400}, nil},
	{"chunk data longer than its size",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nhello\r\n0\r\n\r\n" + smuggled,
		[]int{400}, nil},
	{"well-formed chunked body with extension and trailer",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		[]int{200}, []string{"POST /owa/a"}},
	// The same bytes as a declared body are harmless.
	{"smuggled bytes as a declared body",
		"POST /owa/a HTTP/1.1\r\nHost: test\r\nContent-Length: 81\r\n\r\n" + smuggled, []int{200}, []string{"POST /owa/a"}},
	{"two pipelined requests",
		"GET /owa/1 HTTP/1.1\r\nHost: test\r\n\r\nGET /owa/2 HTTP/1.1\r\nHost: test\r\n\r\n", []int{200, 200}, []string{"GET /owa/1", "GET /owa/2"}},
	{"absolute-form target",
		"GET http://test/owa/x HTTP/1.1\r\nHost: test\r\n\r\n", []int{200}, []string{"GET /owa/x"}},
	// Paths: normalised as IIS does before the service is chosen, or refused.
	{"backslash dot-dot", "GET /owa\\..\\ecp/ HTTP/1.1\r\nHost: test\r\n\r\n", []int{400}, nil},
	{"encoded backslash dot-dot", "GET /owa/..%5cecp/ HTTP/1.1\r\nHost: test\r\n\r\n", []int{400}, nil},
	{"dot-dot", "GET /owa/../ecp/ HTTP/1.1\r\nHost: test\r\n\r\n", []int{400}, nil},
	{"encoded dot-dot", "GET /owa/%2e%2e/ecp/ HTTP/1.1\r\nHost: test\r\n\r\n", []int{400}, nil},
	{"double-encoded dot-dot", "GET /owa/%252e%252e/ecp/ HTTP/1.1\r\nHost: test\r\n\r\n", []int{400}, nil},
	{"percent-u encoding", "GET /%u0065cp/ HTTP/1.1\r\nHost: test\r\n\r\n", []int{400}, nil},
	{"encoded control character", "GET /owa/%01x HTTP/1.1\r\nHost: test\r\n\r\n", []int{400}, nil},
	{"overlong UTF-8 slash", "GET /owa%c0%afx/ HTTP/1.1\r\nHost: test\r\n\r\n", []int{400}, nil},
	{"trailing dot on the virtual directory", "GET /ecp./ HTTP/1.1\r\nHost: test\r\n\r\n", []int{400}, nil},
	{"ecp from outside its allow list", "GET /ecp/ HTTP/1.1\r\nHost: test\r\n\r\n", []int{403}, nil},
	{"encoded ecp", "GET /%65cp/x HTTP/1.1\r\nHost: test\r\n\r\n", []int{403}, nil},
	{"encoded slash after ecp", "GET /ecp%2fx HTTP/1.1\r\nHost: test\r\n\r\n", []int{403}, nil},
	{"powershell with a long s (Unicode folds it to s)", "GET /power%C5%BFhell/ HTTP/1.1\r\nHost: test\r\n\r\n", []int{403}, nil},
	{"powershell in other case", "POST /PowerShell/ HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n", []int{403}, nil},
	// Upgrades: websocket only; anything else is dropped.
	{"h2c upgrade dropped",
		"GET /owa/ HTTP/1.1\r\nHost: test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
		[]int{200}, []string{"GET /owa/"}},
}

// TestSmugglingCorpus sends every corpus case through a real gatehouse
// https frontend to a real nginx, and checks that nginx parsed exactly
// the requests gatehouse logged as forwarded, that the smuggled ECP
// request and its forged client address never reached nginx, and what
// the client was answered.
func TestSmugglingCorpus(t *testing.T) {
	ng := startNginx(t)
	logs := &wiretest.Logs{}
	internal := Service{Allow: []string{"10.0.0.0/8"}}
	f := &Frontend{
		Pool: newPool("web", "nginx="+ng.addr),

		Config: Config{Services: map[string]Service{ECP: internal, PowerShell: internal},
			RootRedirect: "off"}, Link: proxy.Link{Log: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))},
	}
	addr := serve(t, f)
	next := 0
	var all []string // everything gatehouse forwarded, every case
	for i, tc := range smugglingCorpus {
		t.Run(tc.name, func(t *testing.T) {
			mark := len(logs.String())
			statuses := exchangeRaw(t, addr, tc.raw)
			sessionsEnded(t, f)
			var parsed []nginxEntry
			parsed, next = ng.settle(t, next, "marker-"+string(rune('a'+i%26))+strings.Repeat("x", i/26))
			forwarded := gatehouseForwarded(t, logs.String()[mark:])
			all = append(all, forwarded...)
			var seen []string
			for _, e := range parsed {
				seen = append(seen, requestOf(e.Request))
				if strings.Contains(e.XFF, "6.6.6.6") || strings.Contains(e.RealIP, "6.6.6.6") || isECP(e.Request) {
					t.Errorf("nginx parsed a smuggled request: %+v", e)
				}
			}
			if !slices.Equal(seen, forwarded) {
				t.Errorf("nginx parsed %q, gatehouse forwarded %q", seen, forwarded)
			}
			if !slices.Equal(forwarded, tc.forwarded) {
				t.Errorf("gatehouse forwarded %q, want %q", forwarded, tc.forwarded)
			}
			if !slices.Equal(statuses, tc.statuses) {
				t.Errorf("client was answered %v, want %v", statuses, tc.statuses)
			}
		})
	}
	// A request nginx logs late (one it was still serving when gatehouse
	// closed the connection) may fall after its case's marker: the whole
	// log, once it stops growing, must hold what gatehouse forwarded and
	// nothing smuggled.
	var seen []string
	for _, e := range ng.quiet(t) {
		seen = append(seen, requestOf(e.Request))
		if strings.Contains(e.XFF, "6.6.6.6") || strings.Contains(e.RealIP, "6.6.6.6") || isECP(e.Request) {
			t.Errorf("nginx parsed a smuggled request: %+v", e)
		}
	}
	slices.Sort(seen)
	slices.Sort(all)
	if !slices.Equal(seen, all) {
		t.Errorf("over the whole corpus nginx parsed %q, gatehouse forwarded %q", seen, all)
	}
}

// sessionsEnded waits until every session of f has ended.
func sessionsEnded(t testing.TB, f *Frontend) {
	t.Helper()
	eventually(t, wait, "the sessions to end", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.sessions) == 0
	})
}

// exchangeRaw sends raw on a new connection, closes the sending side and
// returns the statuses of every response until gatehouse closes.
func exchangeRaw(t testing.TB, addr, raw string) []int {
	t.Helper()
	c, br := dial(t, addr)
	defer c.Close()
	io.WriteString(c, raw) // a refusal may close before all is read
	c.(*net.TCPConn).CloseWrite()
	var statuses []int
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
				t.Errorf("reading a response: %v", err)
			}
			return statuses
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
}

// gatehouseForwarded returns "METHOD path" of every request gatehouse
// logged as sent whole to a back-end (one whose body was cut short for
// being malformed is logged partial).
func gatehouseForwarded(t testing.TB, log string) []string {
	t.Helper()
	var out []string
	for line := range strings.SplitSeq(log, "\n") {
		var rec struct {
			Msg, Method, Path, Backend string
			Partial                    bool
		}
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Msg == "request" && rec.Backend != "" && !rec.Partial {
			out = append(out, rec.Method+" "+rec.Path)
		}
	}
	return out
}

// requestOf returns "METHOD path" of a request line nginx logged.
func requestOf(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return line
	}
	path, _, _ := strings.Cut(f[1], "?")
	return f[0] + " " + path
}

// isECP reports whether a request line nginx logged reaches ECP by any
// spelling.
func isECP(line string) bool {
	d, err := url.PathUnescape(line)
	if err != nil {
		d = line
	}
	d = strings.ToLower(strings.ReplaceAll(d, "\\", "/"))
	return strings.Contains(d, "/ecp")
}
