package main

import "syscall"

// sysProcAttr puts redis-server in its own process group, so a ctrl-C at the
// terminal reaches lockbench only (which then kills the server itself), and
// has the kernel kill it if lockbench dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
