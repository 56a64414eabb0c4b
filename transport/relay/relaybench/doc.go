// Package relaybench is the relay's benchmark workload, shared by the
// relay's Go benchmarks, the "liveobjects bench relay" command and the
// comparison against a NATS peer (a nested module in ../natsbench, kept
// out of the main module's dependencies).
//
// The workload: one publisher and N subscribers on one channel; the
// publisher keeps at most Window events in flight (published but not yet
// delivered to every subscriber) and stamps each event with its send
// time; subscribers record publish-to-deliver latency. Results: delivered
// events per second (summed over subscribers), MB/s, p50 and p99 latency.
//
// Concurrency: Run owns every goroutine it starts (the publisher loop and
// whatever the System starts) and returns after closing the System.
package relaybench
