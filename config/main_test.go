package config

import (
	"testing"

	"github.com/gatehouse-proxy/gatehouse/internal/wiretest"
)

// TestMain fails the package when goroutines outlive the tests.
func TestMain(m *testing.M) { wiretest.Main(m) }
