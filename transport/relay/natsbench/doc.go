// Command natsbench runs the relay benchmark workload (package relaybench)
// against the relay and against an embedded nats-server on the same
// machine, over loopback, and prints the table with the ratios:
//
//   - relay-mem (log in memory) vs NATS core publish/subscribe;
//   - relay-durable (bbolt log, group commit, fsync before every
//     acknowledgement) vs JetStream with file storage, one replica,
//     acknowledged publishes (its default sync: written to the file
//     before the acknowledgement, fsync periodically), so the relay is
//     held to the stricter standard; -js-sync adds JetStream with
//     sync_always (fsync per message).
//
// Each case runs -reps times per system, interleaved, and the median
// (by msgs/s) is kept: single runs on a small machine vary a lot.
//
// It is a module of its own so that the main module never depends on
// NATS. Run it from this folder:
//
//	go run . [-events N] [-window N]
//	go test -bench . -benchtime 1x
package main
