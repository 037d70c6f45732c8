//go:build unix && !linux

package redistest

import (
	"os"
	"syscall"
)

var (
	stopSignal os.Signal = syscall.SIGSTOP
	contSignal os.Signal = syscall.SIGCONT
)

// sysProcAttr returns nil: Pdeathsig exists only on Linux, so here a server
// can outlive a test binary that crashes before its cleanups run.
func sysProcAttr() *syscall.SysProcAttr { return nil }
