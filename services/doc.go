// Package services hosts the services a root folder declares in its
// services/ folder: the relay server, the QSM local service and
// coordinator, the micro-object server. A Host starts every enabled
// service (a null object, xsi:nil="true", switches one off), shows each
// one's state, and follows the root: a service whose definition changes
// is restarted, one that is removed or switched off is stopped, and one
// that failed to start is tried again every few seconds (RetryEvery).
//
// The Host does not know service types: the program gives it a Factory
// per class id (cmd/liveobjects wires in transport/relay,
// transport/qsm and objects/micro), so this package depends only on
// registry and objects.
//
// # Concurrency
//
// A Host is safe for concurrent use. Host.mu protects the table of running
// services; it is not held while a service starts or stops. One goroutine,
// started by Follow and stopped by Close, applies the root's changes in
// order and makes the retries, between changes. A service's Close never runs while its Start does: a Start that
// outlasts its time limit has its context ended, and the host waits a
// bounded time for it to return; if it still has not, the service is
// closed when it does.
package services
