package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Many small request/reply round trips, as SMTP and IMAP make them, must
// never stall: a reply that arrives between a read that found nothing and
// the wait for more must wake the direction at once. (An earlier build
// waited in a second RawConn.Read call, whose readiness reset lost such
// replies: SMTP sessions hung at their QUIT.) Each round trip is bounded,
// so a lost wake-up fails the test instead of hanging it.
func TestSpliceManySmallRoundTripsNeverStall(t *testing.T) {
	const sessions, trips = 10, 300
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		client, backend := tcpLeg(t), tcpLeg(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := startSplice(ctx, client, backend, time.Minute)
		go echoLines(backend.app)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { cancel(); <-done }()
			errs <- roundTrips(client.app, i, trips)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// echoLines answers every chunk with the same bytes, as a server answers a
// command.
func echoLines(c net.Conn) {
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func roundTrips(c net.Conn, id, trips int) error {
	buf := make([]byte, 64)
	for j := range trips {
		msg := fmt.Sprintf("s%d t%d\r\n", id, j)
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
			return fmt.Errorf("session %d, round trip %d: %w", id, j, err)
		}
	}
	return nil
}
