//go:build !unix

package main

import "time"

// processCPU is unknown here; the worker's CPU per task reads 0.
func processCPU() time.Duration { return 0 }
