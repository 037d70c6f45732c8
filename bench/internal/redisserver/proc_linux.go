package redisserver

import "syscall"

// sysProcAttr puts redis-server in its own process group, so a ctrl-C at the
// terminal reaches the benchmark only (which then kills the server itself), and
// has the kernel kill it if the benchmark dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
