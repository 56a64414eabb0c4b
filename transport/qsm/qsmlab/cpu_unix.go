//go:build unix

package qsmlab

import (
	"syscall"
	"time"
)

// SelfCPU returns the CPU time this process has used so far.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
