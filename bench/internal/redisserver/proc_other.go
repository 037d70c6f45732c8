//go:build !linux

package redisserver

import "syscall"

// sysProcAttr returns nil: outside Linux a ctrl-C reaches redis-server too,
// and a server can outlive a benchmark that crashes before its cleanup.
func sysProcAttr() *syscall.SysProcAttr { return nil }
