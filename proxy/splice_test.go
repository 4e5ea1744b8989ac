//go:build linux

package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// A leg is one of the two connections Splice joins: app is the peer the
// test drives (the mail client, or the back-end server), proxy is the end
// handed to Splice.
type leg struct{ app, proxy net.Conn }

// plainConn hides the *net.TCPConn under it, as any wrapping net.Conn of a
// frontend would, so Splice must take its buffered path.
type plainConn struct{ *net.TCPConn }

func tcpLeg(t testing.TB) leg {
	app, proxy := tcpPair(t)
	return leg{app, proxy}
}

func tlsLeg(t testing.TB) leg {
	app, proxy := tlsPair(t)
	return leg{app, proxy}
}

func wrappedLeg(t testing.TB) leg {
	app, proxy := tcpPair(t)
	return leg{app, plainConn{proxy}}
}

// spliceModes are the kinds of connection pairs Splice meets: two raw TCP
// sockets (splice(2)), TLS terminated at the client side, and a back-end
// connection wrapped in something that is not a *net.TCPConn.
var spliceModes = []struct {
	name string
	legs func(t testing.TB) (client, backend leg)
}{
	{"tcp", func(t testing.TB) (leg, leg) { return tcpLeg(t), tcpLeg(t) }},
	{"tls-client", func(t testing.TB) (leg, leg) { return tlsLeg(t), tcpLeg(t) }},
	{"wrapped-backend", func(t testing.TB) (leg, leg) { return tcpLeg(t), wrappedLeg(t) }},
}

type spliceResult struct {
	up, down int64
	err      error
	took     time.Duration
}

// startSplice runs Splice between the legs' proxy ends in the background.
func startSplice(ctx context.Context, client, backend leg, idle time.Duration) <-chan spliceResult {
	done := make(chan spliceResult, 1)
	go func() {
		start := time.Now()
		up, down, err := Splice(ctx, client.proxy, backend.proxy, idle)
		done <- spliceResult{up, down, err, time.Since(start)}
	}()
	return done
}

// result waits for Splice to return.
func result(t testing.TB, done <-chan spliceResult) spliceResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(wait):
		t.Fatalf("Splice still running after %v", wait)
	}
	return spliceResult{}
}

func closeWriteOf(c net.Conn) error {
	return c.(interface{ CloseWrite() error }).CloseWrite()
}

// sendAndReceive writes data to c, half-closes it, and returns the digest
// of everything read from c until EOF.
func sendAndReceive(c net.Conn, data []byte) (sum [32]byte, n int64, err error) {
	c.SetDeadline(time.Now().Add(wait))
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = closeWriteOf(c)
		}
		wrote <- err
	}()
	h := sha256.New()
	n, rerr := io.Copy(h, c)
	if werr := <-wrote; werr != nil {
		return sum, n, werr
	}
	copy(sum[:], h.Sum(nil))
	return sum, n, rerr
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// Several megabytes each way, both halves closed in turn: every byte
// arrives, in order, and Splice counts them.
func TestSpliceCarriesBytesBothWays(t *testing.T) {
	for _, m := range spliceModes {
		t.Run(m.name, func(t *testing.T) {
			client, backend := m.legs(t)
			upData, downData := randomBytes(t, 4<<20+17), randomBytes(t, 3<<20+5)
			done := startSplice(t.Context(), client, backend, 0)

			type got struct {
				sum [32]byte
				n   int64
				err error
			}
			atBackend := make(chan got, 1)
			go func() {
				sum, n, err := sendAndReceive(backend.app, downData)
				atBackend <- got{sum, n, err}
			}()
			atClientSum, atClientN, err := sendAndReceive(client.app, upData)
			if err != nil {
				t.Fatalf("client side: %v", err)
			}
			b := <-atBackend
			if b.err != nil {
				t.Fatalf("back-end side: %v", b.err)
			}
			if b.sum != sha256.Sum256(upData) || b.n != int64(len(upData)) {
				t.Errorf("back-end received %d bytes with another digest, want the client's %d", b.n, len(upData))
			}
			if atClientSum != sha256.Sum256(downData) || atClientN != int64(len(downData)) {
				t.Errorf("client received %d bytes with another digest, want the back-end's %d", atClientN, len(downData))
			}
			r := result(t, done)
			if r.err != nil || r.up != int64(len(upData)) || r.down != int64(len(downData)) {
				t.Errorf("Splice = (%d, %d, %v), want (%d, %d, nil)", r.up, r.down, r.err, len(upData), len(downData))
			}
		})
	}
}

// The client says QUIT and closes its sending half: the back-end must see
// EOF yet still be able to send its goodbye, and the client must get it.
func TestSpliceHalfClose(t *testing.T) {
	for _, m := range spliceModes {
		t.Run(m.name, func(t *testing.T) {
			client, backend := m.legs(t)
			done := startSplice(t.Context(), client, backend, 0)

			client.app.SetDeadline(time.Now().Add(wait))
			backend.app.SetDeadline(time.Now().Add(wait))
			io.WriteString(client.app, "QUIT\r\n")
			if err := closeWriteOf(client.app); err != nil {
				t.Fatalf("client CloseWrite: %v", err)
			}
			// ReadAll returns only at EOF: the half-close crossed the proxy.
			got, err := io.ReadAll(backend.app)
			if err != nil || string(got) != "QUIT\r\n" {
				t.Fatalf("back-end read %q, %v; want QUIT then EOF", got, err)
			}
			if _, err := io.WriteString(backend.app, "221 2.0.0 Bye\r\n"); err != nil {
				t.Fatalf("back-end cannot answer after the client's half-close: %v", err)
			}
			closeWriteOf(backend.app)
			got, err = io.ReadAll(client.app)
			if err != nil || string(got) != "221 2.0.0 Bye\r\n" {
				t.Fatalf("client read %q, %v; want the goodbye then EOF", got, err)
			}
			r := result(t, done)
			if r.err != nil || r.up != 6 || r.down != 15 {
				t.Errorf("Splice = (%d, %d, %v), want (6, 15, nil)", r.up, r.down, r.err)
			}
		})
	}
}

// Nobody says anything: the idle limit ends the session with ErrIdle.
func TestSpliceIdleEndsSilentSession(t *testing.T) {
	const idle = 200 * time.Millisecond
	for _, m := range spliceModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			client, backend := m.legs(t)
			r := result(t, startSplice(t.Context(), client, backend, idle))
			if !errors.Is(r.err, ErrIdle) {
				t.Errorf("Splice returned %v, want ErrIdle", r.err)
			}
			if r.took < idle*3/4 || r.took > idle+2*time.Second {
				t.Errorf("silent session ended after %v, want about %v", r.took, idle)
			}
		})
	}
}

// One side trickles a byte every 50ms for longer than the idle limit while
// the other says nothing (an IMAP IDLE push, a client uploading slowly):
// the session is not idle. Once the trickle stops, the idle limit ends it.
func TestSpliceIdleSparesOneWayTraffic(t *testing.T) {
	const idle, tick, ticks = 250 * time.Millisecond, 50 * time.Millisecond, 12
	for _, m := range spliceModes {
		for _, dir := range []string{"down", "up"} {
			t.Run(m.name+"/"+dir, func(t *testing.T) {
				t.Parallel()
				client, backend := m.legs(t)
				from, to := backend.app, client.app
				if dir == "up" {
					from, to = client.app, backend.app
				}
				done := startSplice(t.Context(), client, backend, idle)
				received := make(chan []byte, 1)
				go func() {
					to.SetReadDeadline(time.Now().Add(wait))
					b := make([]byte, ticks)
					n, _ := io.ReadFull(to, b)
					received <- b[:n]
				}()
				for i := range ticks {
					time.Sleep(tick)
					select {
					case r := <-done:
						t.Fatalf("Splice ended after %v with %v while bytes still moved", r.took, r.err)
					default:
					}
					if _, err := from.Write([]byte{'a' + byte(i)}); err != nil {
						t.Fatalf("write %d: %v", i, err)
					}
				}
				if got := <-received; string(got) != "abcdefghijkl" {
					t.Errorf("received %q, want every trickled byte", got)
				}
				r := result(t, done)
				if !errors.Is(r.err, ErrIdle) {
					t.Errorf("after the trickle Splice returned %v, want ErrIdle", r.err)
				}
				if r.took < ticks*tick {
					t.Errorf("Splice ended after %v, before the trickle did", r.took)
				}
			})
		}
	}
}

// Cancelling the context ends the session at once, whether or not an idle
// limit is set and bytes are moving.
func TestSpliceContextCancel(t *testing.T) {
	for _, m := range spliceModes {
		for _, idle := range []time.Duration{0, time.Minute} {
			t.Run(m.name+"/idle="+idle.String(), func(t *testing.T) {
				client, backend := m.legs(t)
				ctx, cancel := context.WithCancel(t.Context())
				done := startSplice(ctx, client, backend, idle)
				stopTrickle := trickle(backend.app, 20*time.Millisecond)
				defer stopTrickle()
				drain(client.app)

				time.Sleep(150 * time.Millisecond)
				cancel()
				start := time.Now()
				select {
				case r := <-done:
					if !errors.Is(r.err, context.Canceled) {
						t.Errorf("Splice returned %v, want context.Canceled", r.err)
					}
				case <-time.After(2 * time.Second):
					t.Fatalf("Splice still running %v after cancel", time.Since(start).Round(time.Millisecond))
				}
			})
		}
	}
}

// trickle writes a byte to c every d until stopped or a write fails.
func trickle(c net.Conn, d time.Duration) (stop func()) {
	quit, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		tk := time.NewTicker(d)
		defer tk.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tk.C:
				c.SetWriteDeadline(time.Now().Add(wait))
				if _, err := c.Write([]byte{'.'}); err != nil {
					return
				}
			}
		}
	}()
	return func() { close(quit); <-ended }
}

// drain reads and discards c until it ends (the test's cleanup closes it).
func drain(c net.Conn) {
	go io.Copy(io.Discard, c)
}

// The modes above take the paths they claim: raw TCP sockets, bare or in a
// ClientConn, splice; anything else copies through a buffer.
func TestSplicePathChoice(t *testing.T) {
	near, far := tcpPair(t)
	tlsNear, _ := tlsPair(t)
	cases := []struct {
		name string
		conn net.Conn
		want *net.TCPConn
	}{
		{"tcp", near, near},
		{"client-conn", &ClientConn{TCPConn: far}, far},
		{"tls", tlsNear, nil},
		{"wrapped", plainConn{near}, nil},
	}
	for _, c := range cases {
		if got := rawTCP(c.conn); got != c.want {
			t.Errorf("%s: rawTCP = %v, want %v", c.name, got, c.want)
		}
	}
}

// BenchmarkSplice measures one direction's throughput over loopback, on
// the splice(2) path and on the buffered one.
func BenchmarkSplice(b *testing.B) {
	for _, m := range []struct {
		name string
		legs func(testing.TB) (leg, leg)
	}{
		{"splice", func(t testing.TB) (leg, leg) { return tcpLeg(t), tcpLeg(t) }},
		{"buffered", func(t testing.TB) (leg, leg) { return tcpLeg(t), wrappedLeg(t) }},
	} {
		b.Run(m.name, func(b *testing.B) {
			client, backend := m.legs(b)
			done := startSplice(b.Context(), client, backend, 0)
			chunk := bytes.Repeat([]byte("gatehouse"), 64<<10/9)
			b.SetBytes(int64(len(chunk)))
			counted := make(chan int64, 1)
			go func() {
				n, _ := io.Copy(io.Discard, backend.app)
				counted <- n
			}()
			b.ResetTimer()
			for range b.N {
				if _, err := client.app.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			closeWriteOf(client.app)
			if n := <-counted; n != int64(b.N*len(chunk)) {
				b.Fatalf("back-end received %d bytes, want %d", n, b.N*len(chunk))
			}
			b.StopTimer()
			closeWriteOf(backend.app)
			<-done
		})
	}
}
