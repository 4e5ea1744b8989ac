package https

import (
	"bufio"
	"container/list"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"time"
)

// RPC over HTTP v2 ([MS-RPCH]): an Outlook Anywhere virtual connection is
// two long requests on two TCP connections, RPC_IN_DATA (the IN channel,
// client to server in the request body) and RPC_OUT_DATA (the OUT
// channel, server to client in the response body). The first PDU of each
// channel's body names the virtual connection by a 16-byte cookie.

// rts is what the first PDU of a channel request tells.
type rts struct {
	name   string   // CONN/A1, CONN/B1, IN_R1/A1 or OUT_R1/A3
	in     bool     // IN channel (RPC_IN_DATA)
	cookie [16]byte // VirtualConnectionCookie
}

// minPDUBody is the smallest Content-Length whose body may start with a
// channel's first PDU: bodies of 0 to 16 bytes are authentication legs and
// echo requests ([MS-RPCH] 2.1.2.1.5), and waiting for 20 bytes of them
// would hang the client.
const minPDUBody = 20

// maxFirstPDU bounds the first PDU read (CONN/B1, the largest, is 104).
const maxFirstPDU = 256

// peekRTS looks at the first PDU of a channel request body without
// consuming it, reading no more bytes than Content-Length promises and
// only as many as the PDU's own header says it has. It returns false when
// the body does not start with a channel's first PDU.
func peekRTS(br *bufio.Reader, method []byte, length int64) (rts, bool) {
	if length < minPDUBody {
		return rts{}, false
	}
	h, err := br.Peek(20)
	if err != nil || !rtsHeader(h) {
		return rts{}, false
	}
	frag := int64(binary.LittleEndian.Uint16(h[8:10]))
	if frag < 48 || frag > maxFirstPDU || frag > length {
		return rts{}, false
	}
	pdu, err := br.Peek(int(frag))
	if err != nil {
		return rts{}, false
	}
	return parseRTS(pdu, string(method) == "RPC_IN_DATA")
}

// rtsHeader checks the common header of an RTS PDU ([MS-RPCH] 2.2.3.6.1):
// version 5.0, PTYPE 20 (rts), first and last fragment, little-endian data
// representation, no authentication trailer, call id 0.
func rtsHeader(h []byte) bool {
	return h[0] == 5 && h[1] == 0 && h[2] == 20 && h[3] == 3 &&
		h[4] == 0x10 && binary.LittleEndian.Uint16(h[10:12]) == 0
}

// parseRTS recognises the first PDU of a new or replacement channel by its
// flags and command count ([MS-RPCH] 2.2.4.2 CONN/A1, 2.2.4.5 CONN/B1,
// 2.2.4.10 IN_R1/A1, 2.2.4.31 OUT_R1/A3) and takes the cookie, which all
// four carry at offset 32 after a Version command (offset 20) and a Cookie
// command (type 3 at offset 28).
func parseRTS(p []byte, in bool) (rts, bool) {
	flags := binary.LittleEndian.Uint16(p[16:18])
	cmds := binary.LittleEndian.Uint16(p[18:20])
	var name string
	switch {
	case in && flags == 0 && cmds == 6:
		name = "CONN/B1"
	case in && flags == 4 && cmds == 4:
		name = "IN_R1/A1"
	case !in && flags == 0 && cmds == 4:
		name = "CONN/A1"
	case !in && flags == 4 && cmds == 5:
		name = "OUT_R1/A3"
	default:
		return rts{}, false
	}
	if binary.LittleEndian.Uint32(p[20:24]) != 6 || binary.LittleEndian.Uint32(p[28:32]) != 3 {
		return rts{}, false
	}
	r := rts{name: name, in: in}
	copy(r.cookie[:], p[32:48])
	return r, true
}

// key is the affinity key of the virtual connection.
func (r rts) key() string { return "rpc-vc:" + hex.EncodeToString(r.cookie[:]) }

// channels remembers which back-end serves each virtual connection, so
// that replacement channels follow it and pairs can be counted. Its
// cookies are chosen by clients, so the table is bounded: entries of
// virtual connections with no live channel are forgotten after
// channelTTL, and beyond maxChannels entries the least recently seen is
// forgotten first. A forgotten virtual connection still routes by its
// cookie's hash (rpcRoute); only its pair count is lost.
type channels struct {
	mu    sync.Mutex
	m     map[[16]byte]*list.Element // of *vconn, least recently seen first
	order list.List
	swept time.Time
	max   int // 0 means maxChannels
}

// vconn is one virtual connection: the back-end of each channel.
type vconn struct {
	cookie  [16]byte
	in, out string // back-end names; "" while unseen
	live    int
	seen    time.Time
}

const (
	channelTTL  = 30 * time.Minute
	maxChannels = 16384
)

// lookup returns the back-end of the virtual connection's latest
// channel, or "".
func (t *channels) lookup(cookie [16]byte) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[cookie]
	switch {
	case e == nil:
		return ""
	case e.Value.(*vconn).out != "":
		return e.Value.(*vconn).out
	}
	return e.Value.(*vconn).in
}

// attach records a channel on a back-end and returns "together" or
// "split" when the channel completes a pair (its opposite is known), ""
// otherwise. detach must follow when the channel ends.
func (t *channels) attach(r rts, backend string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.sweep(now)
	v := t.entry(r.cookie)
	v.live++
	v.seen = now
	mine, other := &v.out, v.in
	if r.in {
		mine, other = &v.in, v.out
	}
	*mine = backend
	switch {
	case other == "":
		return ""
	case other == backend:
		return "together"
	}
	return "split"
}

// entry returns the cookie's virtual connection, made the most recently
// seen, creating it (and forgetting the least recently seen beyond the
// cap) when new.
func (t *channels) entry(cookie [16]byte) *vconn {
	if t.m == nil {
		t.m = make(map[[16]byte]*list.Element)
	}
	if e := t.m[cookie]; e != nil {
		t.order.MoveToBack(e)
		return e.Value.(*vconn)
	}
	limit := t.max
	if limit <= 0 {
		limit = maxChannels
	}
	for t.order.Len() >= limit {
		oldest := t.order.Front()
		delete(t.m, oldest.Value.(*vconn).cookie)
		t.order.Remove(oldest)
	}
	v := &vconn{cookie: cookie}
	t.m[cookie] = t.order.PushBack(v)
	return v
}

// detach records the end of a channel.
func (t *channels) detach(r rts) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.m[r.cookie]; e != nil {
		v := e.Value.(*vconn)
		v.live--
		v.seen = time.Now()
		t.order.MoveToBack(e)
	}
}

// size returns the number of virtual connections remembered.
func (t *channels) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// sweep forgets idle virtual connections, at most once a minute.
func (t *channels) sweep(now time.Time) {
	if now.Sub(t.swept) < time.Minute {
		return
	}
	t.swept = now
	for k, e := range t.m {
		if v := e.Value.(*vconn); v.live <= 0 && now.Sub(v.seen) > channelTTL {
			delete(t.m, k)
			t.order.Remove(e)
		}
	}
}
