//go:build !linux

package main

import (
	"errors"
	"syscall"
	"time"
)

// sysProcAttr returns nil: outside Linux a ctrl-C reaches the workers too.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// pidCPU needs /proc; elsewhere the workers' CPU is unknown.
func pidCPU(int) (time.Duration, error) {
	return 0, errors.New("worker CPU: needs Linux's /proc")
}

// machineCPU needs /proc; elsewhere other processes' share is unknown.
func machineCPU() (time.Duration, error) {
	return 0, errors.New("machine CPU: needs Linux's /proc")
}

// selfCPU needs /proc, as pidCPU does.
func selfCPU() (time.Duration, error) { return pidCPU(0) }
