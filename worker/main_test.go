package worker

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: OpenRedis
// owns a client and maybe an embedded server, and its close func must stop
// both. go-redis probes a server it could not dial from a goroutine that
// sleeps a second between tries and sees Close only when it wakes; the
// quorum test leaves one behind for that second by design.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}
