package middleware_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The guard starts goroutines (lease watchers, detached wake-ups) that
// must all be gone once its workers have shut down.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
