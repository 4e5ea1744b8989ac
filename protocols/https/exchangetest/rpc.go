package exchangetest

import (
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// RPC over HTTP v2 ([MS-RPCH]) as far as a proxy's tests need it: the IN
// channel (RPC_IN_DATA) and the OUT channel (RPC_OUT_DATA) of a virtual
// connection each start their body with an RTS PDU carrying the virtual
// connection cookie at offset 32. The server records each channel, and
// whatever the client sends on an IN channel after its first PDU comes
// back on the OUT channel of the same cookie on this server, as an RPC
// server's replies would: a test sees bytes cross both streams.

// Channel is an RPC over HTTP channel the server received.
type Channel struct {
	// Cookie is the virtual connection cookie.
	Cookie [16]byte
	// In is true for RPC_IN_DATA, false for RPC_OUT_DATA.
	In bool
	// PDU names the first PDU: CONN/A1, CONN/B1, IN_R1/A1 or OUT_R1/A3.
	PDU string
	// User is who the channel authenticated as, "" when no login was asked.
	User string
	// Client is the address the request came from (gatehouse's, behind it).
	Client string
}

// outChannelLength is the Content-Length Exchange gives an OUT channel
// response: the channel lives until that much has been sent.
const outChannelLength = 1 << 30

// vconn is a virtual connection: where its OUT channel's bytes go.
type vconn struct {
	mu    sync.Mutex
	out   io.Writer
	flush func()
	ready chan struct{}
	once  sync.Once
}

// Channels returns the channels received so far, oldest first.
func (s *Server) Channels() []Channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.channels)
}

// serveRPC answers /rpc/rpcproxy.dll: echo requests of 0 to 16 bytes
// ([MS-RPCH] 2.1.2.1.5), else a channel.
func (s *Server) serveRPC(w http.ResponseWriter, r *http.Request, user string) {
	if r.ContentLength >= 0 && r.ContentLength <= 16 {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/rpc")
		w.Header().Set("Content-Length", "20")
		w.Write(rtsPDU(0x40)) // RTS_FLAG_ECHO
		return
	}
	ch, err := readFirstPDU(r)
	if err != nil {
		http.Error(w, "RPC Error: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	ch.User, ch.Client = user, r.RemoteAddr
	s.mu.Lock()
	s.channels = append(s.channels, ch)
	s.mu.Unlock()
	v := s.vconn(ch.Cookie)
	if ch.In {
		s.inChannel(r, v)
		return
	}
	s.outChannel(w, r, v)
}

// readFirstPDU reads and checks the first RTS PDU of a channel body.
func readFirstPDU(r *http.Request) (Channel, error) {
	h := make([]byte, 20)
	if _, err := io.ReadFull(r.Body, h); err != nil {
		return Channel{}, err
	}
	frag := int(binary.LittleEndian.Uint16(h[8:]))
	if h[0] != 5 || h[2] != 20 || frag < 48 || frag > 256 {
		return Channel{}, errors.New("not an RTS PDU")
	}
	p := append(h, make([]byte, frag-20)...)
	if _, err := io.ReadFull(r.Body, p[20:]); err != nil {
		return Channel{}, err
	}
	ch := Channel{In: r.Method == "RPC_IN_DATA"}
	flags, cmds := binary.LittleEndian.Uint16(p[16:]), binary.LittleEndian.Uint16(p[18:])
	switch {
	case ch.In && flags == 0 && cmds == 6:
		ch.PDU = "CONN/B1"
	case ch.In && flags == 4 && cmds == 4:
		ch.PDU = "IN_R1/A1"
	case !ch.In && flags == 0 && cmds == 4:
		ch.PDU = "CONN/A1"
	case !ch.In && flags == 4 && cmds == 5:
		ch.PDU = "OUT_R1/A3"
	default:
		return Channel{}, errors.New("unexpected first PDU")
	}
	copy(ch.Cookie[:], p[32:48])
	return ch, nil
}

func (s *Server) vconn(cookie [16]byte) *vconn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vconns == nil {
		s.vconns = make(map[[16]byte]*vconn)
	}
	v := s.vconns[cookie]
	if v == nil {
		v = &vconn{ready: make(chan struct{})}
		s.vconns[cookie] = v
	}
	return v
}

// outChannel answers 200 with the OUT channel's huge length, sends the
// CONN/A3 and CONN/C2 PDUs, then relays what the IN channel receives
// until the client goes away.
func (s *Server) outChannel(w http.ResponseWriter, r *http.Request, v *vconn) {
	w.Header().Set("Content-Type", "application/rpc")
	w.Header().Set("Content-Length", strconv.Itoa(outChannelLength))
	w.WriteHeader(http.StatusOK)
	w.Write(connA3())
	w.Write(connC2())
	rc := http.NewResponseController(w)
	rc.Flush()
	v.mu.Lock()
	v.out, v.flush = w, func() { rc.Flush() }
	v.mu.Unlock()
	v.once.Do(func() { close(v.ready) })
	<-r.Context().Done()
	v.mu.Lock()
	v.out = nil
	v.mu.Unlock()
}

// inChannel relays the IN channel's bytes after its first PDU to the OUT
// channel of its virtual connection, as they arrive.
func (s *Server) inChannel(r *http.Request, v *vconn) {
	select {
	case <-v.ready:
	case <-time.After(5 * time.Second):
	case <-r.Context().Done():
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			v.mu.Lock()
			if v.out != nil {
				v.out.Write(buf[:n])
				v.flush()
			}
			v.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// rtsPDU builds an RTS PDU ([MS-RPCH] 2.2.3.6.1) with the given flags and
// commands (each a u32 type and its payload).
func rtsPDU(flags uint16, cmds ...[]byte) []byte {
	p := []byte{5, 0, 20, 3, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	p = binary.LittleEndian.AppendUint16(p, flags)
	p = binary.LittleEndian.AppendUint16(p, uint16(len(cmds)))
	for _, c := range cmds {
		p = append(p, c...)
	}
	binary.LittleEndian.PutUint16(p[8:], uint16(len(p)))
	return p
}

// rtsCommand is a command with a u32 payload.
func rtsCommand(typ, value uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, typ), value)
}

// connA3 is the first PDU of the OUT channel response ([MS-RPCH] 2.2.4.4):
// ConnectionTimeout, 28 bytes.
func connA3() []byte { return rtsPDU(0, rtsCommand(2, 120000)) }

// connC2 tells the client the virtual connection is up ([MS-RPCH]
// 2.2.4.9): Version, ReceiveWindowSize, ConnectionTimeout, 44 bytes.
func connC2() []byte {
	return rtsPDU(0, rtsCommand(6, 1), rtsCommand(0, 65536), rtsCommand(2, 120000))
}
