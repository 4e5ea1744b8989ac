package tls

import (
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// TestMain fails the package when goroutines outlive the tests, except
// library ones with no way to stop: Pebble's validation workers and
// certmagic's per-CA rate limiters.
func TestMain(m *testing.M) {
	wiretest.MainIgnoring(m, 5*time.Second, "pebble/v2/va.VAImpl.processTasks", "certmagic.(*RingBufferRateLimiter).loop")
}
