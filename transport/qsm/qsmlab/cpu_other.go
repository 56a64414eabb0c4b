//go:build !unix

package qsmlab

import "time"

// SelfCPU returns the CPU time this process has used so far: always 0 on
// systems where it is not read.
func SelfCPU() time.Duration { return 0 }
