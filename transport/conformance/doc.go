// Package conformance is the test suite every communication driver runs:
// Run(t, factory) checks, against real drivers in one world, that events
// arrive exactly once, in one total order when the driver promises it
// (and with the sequence number Publish returned), FIFO per sender, that a
// joiner's state plus the events after it equal everyone else's history
// while others keep publishing, that joins and leaves racing with a
// publisher break nothing (no Handler call after Leave returns, one call at
// a time), and that many channels share one driver.
//
// Tests whose property the driver does not Provide are skipped, with the
// missing guarantee named; everything else runs.
//
// Concurrency: the suite starts publisher goroutines and waits for them
// before each test returns; Recorder is safe for concurrent use and checks
// that the driver never calls it concurrently.
package conformance
