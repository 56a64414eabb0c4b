//go:build !race

package qsm

// raceEnabled is set when the tests run with the race detector, which
// allocates on its own: tests that count allocations skip.
const raceEnabled = false
