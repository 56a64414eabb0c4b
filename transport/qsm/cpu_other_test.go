//go:build !unix

package qsm

import "time"

// processCPU is not read on this system: BenchmarkDeliver skips.
func processCPU() time.Duration { return 0 }
