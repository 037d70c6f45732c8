package chaos

import (
	"os"
	"testing"
)

// TestMain removes the turnstile binary the tests built once.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir) // a temp dir; nothing to do if it stays
	}
	os.Exit(code)
}
