//go:build !unix

package redistest

import (
	"os"
	"syscall"
)

// Without SIGSTOP and SIGCONT, Pause and Resume fail the test.
var (
	stopSignal os.Signal
	contSignal os.Signal
)

func sysProcAttr() *syscall.SysProcAttr { return nil }
