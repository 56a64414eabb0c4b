// Package transport defines the contract between live objects and the
// communication drivers that carry their events: Driver, Member, Handler and
// the Guarantee set a driver provides and an object requires.
//
// Drivers live in subpackages (transport/relay, transport/qsm); this package
// imports none of them and knows nothing of files or objects. The
// conformance suite for drivers is in transport/conformance.
//
// Concurrency: Driver and Member methods are safe to call from any
// goroutine. A driver calls the methods of one Handler from one goroutine
// at a time, in stream order.
package transport
