package redisserver

import (
	"os"
	"os/exec"
	"testing"
)

// ForTest starts a redis-server for tb and stops it when tb ends. Without
// redis-server on PATH it skips tb, or fails it under CI=true, where a
// missing server is a broken setup.
func ForTest(tb testing.TB) *Server {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("redis-server not found under CI=true: %v", err)
		}
		tb.Skipf("redis-server not found: %v", err)
	}
	srv, err := Start(tb.Context(), "redis-server")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			tb.Error(err)
		}
	})
	return srv
}
