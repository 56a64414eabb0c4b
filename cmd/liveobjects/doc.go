// Command liveobjects is the single binary of the project: it mounts a
// folder of live distributed objects, hosts the services a root declares
// (the relay, the QSM local service and coordinator, the micro-object
// server), and offers scripts a way in without FUSE. Run "liveobjects help".
//
// Each subcommand lives in a file of its own and registers itself from
// init (main.go: register). wiring.go is the one place that knows every
// driver and service and hands them to the generic layers (channels.Hub,
// services.Host).
//
// # Concurrency
//
// A command runs on the main goroutine with a context that SIGINT and
// SIGTERM cancel; long-running commands (up, mount, relay, qsm, mo serve)
// shut their components down in reverse order of starting them when it
// ends, and exit 0 after a clean shutdown. After the first signal, the
// signals get their default action back (main.go: afterInterrupt): a
// second one ends the process at once, and a command still stopping after
// a few seconds says so.
package main
