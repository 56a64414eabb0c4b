// Command natsbench runs the relay benchmark workload (package relaybench)
// against the relay and against an embedded nats-server on the same
// machine, over loopback, and prints the table with the ratios:
//
//   - relay-mem (log in memory) vs NATS core publish/subscribe;
//   - relay-durable (bbolt log, group commit, fsync, acknowledged
//     publishes) vs JetStream with file storage, one replica,
//     acknowledged publishes, fsync on every write (sync_always) so both
//     acknowledge only what is on disk; relay-durable-nosync vs JetStream
//     with its default (periodic) sync is printed too.
//
// It is a module of its own so that the main module never depends on
// NATS. Run it from this folder:
//
//	go run . [-events N] [-window N]
//	go test -bench . -benchtime 1x
package main
