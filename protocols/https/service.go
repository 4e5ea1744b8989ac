package https

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
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
// segment, case-insensitively, after resolving the path as IIS does (see
// canonicalPath): "/OWA/", "/owa" and "/%6Fwa/x" are all OWA; "/",
// unknown paths and paths gatehouse refuses are Default.
func Classify(target string) string {
	path, _, _ := strings.Cut(target, "?")
	canon, err := canonicalPath([]byte(path))
	if err != nil {
		return Default
	}
	return classifyPath(canon)
}

// classifyPath returns the service of a canonical path. Its first segment
// is compared with Unicode case folding, which is wider than ASCII's
// ("ſ" folds to "s"): a name IIS might fold to a virtual directory is
// taken for that service, never for the default one. Leading empty
// segments are skipped ("//ecp/" is ECP), as a back-end that merges
// slashes would.
func classifyPath(canon string) string {
	seg, _, _ := strings.Cut(strings.TrimLeft(canon, "/"), "/")
	for _, v := range vdirs {
		if strings.EqualFold(seg, v.seg) {
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

// canonicalPath returns the path as IIS (HTTP.sys) would resolve it, so
// that gatehouse chooses the service the back-end will serve: percent
// escapes decoded once, %2F included. Every path whose resolution needs
// more than that is refused rather than guessed at, since a client that
// sends one could reach one service's back-end through another's path
// ("/owa/..%5cecp/"): a backslash, raw or encoded (IIS reads it as "/"),
// "." and ".." segments, an escape that is not two hex digits (IIS's
// %uXXXX), double encoding (a "%" left after decoding: IIS refuses it by
// default too), bytes that are not UTF-8 (overlong forms of "/" and "."),
// control characters, and a first segment ending in a dot or space (which
// Windows strips). Empty segments before the first named one ("//ecp/",
// "/%2fecp/") are skipped when the service is chosen: nginx, and any
// server that merges slashes, serves them as "/ecp/".
func canonicalPath(path []byte) (string, error) {
	if bytes.IndexByte(path, '\\') >= 0 {
		return "", fmt.Errorf("backslash in path %q", clip(path))
	}
	d, err := url.PathUnescape(string(path))
	if err != nil {
		return "", fmt.Errorf("path %q: %w", clip(path), err)
	}
	switch {
	case strings.IndexByte(d, '\\') >= 0:
		return "", fmt.Errorf("encoded backslash in path %q", clip(path))
	case strings.IndexByte(d, '%') >= 0:
		return "", fmt.Errorf("double-encoded path %q", clip(path))
	case !utf8.ValidString(d) || strings.ContainsFunc(d, isControl):
		return "", fmt.Errorf("path %q decodes to invalid characters", clip(path))
	}
	first := true
	for seg := range strings.SplitSeq(strings.TrimLeft(d, "/"), "/") {
		if seg == "." || seg == ".." {
			return "", fmt.Errorf("dot segment in %q", clip(path))
		}
		if first && seg != "" && strings.ContainsAny(seg[len(seg)-1:], ". ") {
			return "", fmt.Errorf("virtual directory %q ends in a dot or space", seg)
		}
		first = false
	}
	return d, nil
}

// isControl reports an ASCII control character.
func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
