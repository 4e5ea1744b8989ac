package https

import (
	"bytes"
	"net/url"
	"strings"
)

// vdirs maps the first path segment of a request, in any case, to its
// service (Exchange's virtual directories).
var vdirs = []struct{ seg, service string }{
	{"owa", OWA},
	{"ecp", ECP},
	{"ews", EWS},
	{"microsoft-server-activesync", ActiveSync},
	{"rpc", RPC},
	{"rpcwithcert", RPC},
	{"mapi", MAPI},
	{"autodiscover", Autodiscover},
	{"oab", OAB},
	{"powershell", PowerShell},
}

// Classify returns the service of a request target by its first path
// segment, case-insensitively and after percent-decoding that segment:
// "/OWA/", "/owa" and "/%6Fwa/x" are all OWA; "/" and unknown paths are
// Default.
func Classify(target string) string {
	path, _, _ := strings.Cut(target, "?")
	return classifyPath([]byte(path))
}

func classifyPath(path []byte) string {
	if len(path) < 2 || path[0] != '/' {
		return Default
	}
	seg := path[1:]
	if i := bytes.IndexByte(seg, '/'); i >= 0 {
		seg = seg[:i]
	}
	if bytes.IndexByte(seg, '%') >= 0 {
		d, err := url.PathUnescape(string(seg))
		if err != nil {
			return Default
		}
		seg = []byte(d)
	}
	for _, v := range vdirs {
		if equalFold(seg, v.seg) {
			return v.service
		}
	}
	return Default
}

// splitTarget returns the path and the query (without "?") of an
// origin-form target.
func splitTarget(target []byte) (path, query []byte) {
	path, query, _ = bytes.Cut(target, []byte("?"))
	return path, query
}

// dotSegments reports whether a path holds "." or ".." segments, plain or
// percent-encoded: a client that sends them could reach one service's
// back-end through another's path ("/owa/../ecp/"), so they are refused.
func dotSegments(path []byte) bool {
	if bytes.IndexByte(path, '%') >= 0 {
		if d, err := url.PathUnescape(string(path)); err == nil {
			path = []byte(d)
		}
	}
	for len(path) > 0 {
		var seg []byte
		seg, path, _ = bytes.Cut(path, []byte("/"))
		if string(seg) == "." || string(seg) == ".." {
			return true
		}
	}
	return false
}
