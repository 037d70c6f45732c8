package worker

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: OpenRedis
// owns a client and maybe an embedded server, and its close func must stop
// both.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
