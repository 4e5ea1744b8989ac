package gatehouse

import (
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// TestMain fails the package when goroutines outlive the tests: every
// server, listener, monitor and session a test starts must have ended
// (certmagic's per-CA rate limiters have no way to stop).
func TestMain(m *testing.M) {
	wiretest.MainIgnoring(m, 10*time.Second, "certmagic.(*RingBufferRateLimiter).loop")
}
