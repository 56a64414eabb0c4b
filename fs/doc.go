// Package fs adapts live objects to a FUSE mount with go-fuse: folders of
// the root become directories, every .liveobject definition becomes a
// file, channels/ lists the root's channels over the relay (and further
// channel folders, such as qsm/, list them over other drivers), services/
// shows each service's state, and files/ shows the distributed files of a
// micro-object server (FileStore; while it runs, for a FileStoreSwitch).
// Opening a live file for reading joins the object (via
// channels.Hub) and reads stream its state and events; writing publishes.
// The file semantics (what a read returns, what a write publishes) live in
// objects/logic; this package only maps them onto FUSE calls, and maps
// errors onto errno values in one place (errno.go).
//
// # Parallelism
//
// The kernel sends requests in parallel and go-fuse serves each in its own
// goroutine. Directory listings and attributes are answered from the
// registry's in-memory model and never touch the network; only Open (the
// join) and Read/Write/Flush/Release of live files do. Mount.mu protects
// the set of open handles, used to end readers when an object goes away or
// the mount shuts down, and the handles of each object closed with a
// stream's partial line waiting. A Write first publishes those lines
// (Mount.settle, taking each such handle's lock in turn, never two at
// once), then takes its own handle's lock: a close(2) returns before the
// kernel's Release, and the line must still come before later writes. A
// line stays noted until it is published, and a write that finds lines
// another write is publishing waits for it on the object's settleLock
// (kept in Mount.settling while a write holds or waits for it, and taken
// before any handle's lock); writes to other objects do not wait.
//
// A handle's reader and writer are used by one request at a time (the
// kernel serialises writes on one file description; reads on a stream file
// are serialised by FOPEN_STREAM semantics, and the reader tolerates
// concurrent calls anyway).
//
// # Interrupts
//
// A FUSE interrupt (Ctrl-C on a blocked cat) cancels the request's context;
// a blocked Read then returns EINTR at once. Writes do not honour
// interrupts, because the Go runtime's SIGURG preemption signals generate
// interrupts too and a retried write must never publish twice; a write is
// bounded by a publish timeout instead.
//
// # Deadlocks
//
// A process that serves a mount must not touch that mount itself (see
// go-fuse's package documentation): the daemon never opens paths below its
// own mountpoint, and tests drive the mount through separate processes.
// That is also why New does not call go-fuse's WaitMount, whose poll hack
// opens a file in the mount from the serving process: a process killed
// while its own request to its mount is being served can never exit (the
// request waits for an answer from the very process, and the mount's
// connection stays open while it waits), and its mountpoint then hangs
// every process that touches it. Without the hack the kernel asks the
// mount whether it polls the first time a program (the Go runtime's
// poller, for one) polls one of its files; the mount answers that it does
// not, and the kernel does not ask again.
package fs
