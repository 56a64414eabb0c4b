// Package relay is the default communication driver: a central relay
// server that orders every channel's events, and the per-process client
// that carries all of a process's channels over one TCP connection.
//
// # Guarantees
//
// Every event published on a channel is delivered to every member exactly
// once, in one total order shared by all members: the relay assigns each
// event the next sequence number of its channel, and Publish returns that
// number once the relay has the event in its order (and, in durable mode,
// on disk). A joiner first receives a checkpoint consistent with some
// sequence number s (Handler.Restore), then every event after s. The
// checkpoint comes from an existing member, requested by the relay in that
// member's stream; a member that does not answer within CheckpointTimeout
// is skipped; when no member can answer, the relay's own latest checkpoint
// and the log after it are used, so joining works with nobody else online.
//
// # Durability
//
// With ServerConfig.DataDir set (the default of the relay command), every
// channel's latest checkpoint and the log after it live in a bbolt file.
// A committer goroutine writes everything pending in one transaction
// (group commit); events are delivered and acknowledged only after their
// transaction is on disk, so a crash (kill -9) and restart lose no
// acknowledged event and no member ever sees an event the relay forgot.
// Compaction: after CompactEvents events or CompactBytes bytes the relay
// asks a member for a checkpoint, stores it and deletes the log up to it.
// When no member can give one, the log grows up to MaxLogBytes; past it the
// oldest events are trimmed (logged), and a joiner that would need them
// while no member can give a checkpoint gets an error with CodeTrimmed.
// Without DataDir the relay keeps the same structures in memory only.
//
// A client pings the relay when its connection was quiet for a heartbeat
// (ClientConfig.Heartbeat, 5 s) and takes a relay that stays silent for
// three heartbeats for gone (a host that vanished or a cut network sends
// no error): it drops the connection and reconnects. The relay finds dead
// clients through TCP keepalive.
//
// Clients reconnect by themselves with bounded exponential backoff and
// resume each channel after the last event they received: the relay sends
// the log after it, or a checkpoint when the log was compacted past it.
// Publishes not yet acknowledged are resent with the same (client id,
// counter) key; the relay applies each key at most once (it remembers the
// last 8192 counters of each client, and the last one on disk; a client
// keeps at most 4096 unacknowledged). An in-memory relay that restarted
// has a new epoch: resuming members then get a fresh state (usually
// empty) by Restore, logged, instead of events they cannot have.
//
// # Channels
//
// A channel is known by its name and, when it has one, by its 32-hex-digit
// ID; joining, publishing and removing accept either, and every frame to a
// member uses the key it joined with. Channels come from ServerConfig,
// from the store, and from clients (CreateChannel, or Join when
// AllowCreate); clients learn of additions and removals (Client.Watch). A
// channel created by a join by its ID, stored under that ID as its name,
// is the configured channel with that ID after a restart: it takes the
// configured name, in the store too, and keeps its log.
//
// # Slow members
//
// The relay never queues per member: each member has a cursor into its
// channel's log and the connection's writer pulls from it, so a slow
// member costs no one else anything. A member whose cursor lags more than
// MemberQueue events behind, or whose client-side queue overflows
// (ClientConfig.MemberQueue), is caught up by state transfer (Restore with
// a newer checkpoint); this is logged at both ends, never silent.
//
// # Wire protocol
//
// Frames are a 4-byte big-endian length, one type byte (an append-only
// list, see wire.go) and a body; lengths are checked against the limit
// before anything is allocated, and the Parser keeps its state across
// reads. A connection opens with a hello carrying a magic number and the
// client's [min, max] protocol versions; the server answers welcome with
// the chosen version, its epoch (which changes when its history is lost)
// and its limits. Errors carry stable numeric codes (Code). Checkpoints
// larger than a frame travel in chunks. TLS and authorization (a shared
// secret, or a token per channel) are optional.
//
// # Concurrency
//
// Server: one accept goroutine, per connection a reader goroutine and a
// writer goroutine, and one committer goroutine in durable mode, all
// counted in the server's WaitGroup and stopped by Close; checkpoint
// request timers (time.AfterFunc) are stopped by Close. When the store
// keeps failing, the committer shuts the server down (Close in a goroutine
// of its own) rather than acknowledge what is not on disk. Locks, in the order they may be taken:
// clientRec.mu (a client's publish counters) -> channel.mu (a channel's
// order, log, checkpoint and members) -> sconn.mu (a connection's control
// queue and member list); Server.mu (channel and connection maps) is never
// held while taking another lock except sconn.mu. committer.mu guards only
// its pending list and is taken under channel.mu.
//
// Client: per connection a reader, a writer and a heartbeat goroutine,
// one supervisor goroutine that reconnects, and per Member one goroutine
// that calls its Handler; Close stops them all. Client.mu guards the connection, the
// member map, pending publishes and requests; Member.mu guards the member's
// queue; Member.callMu is held during each Handler call so that Leave can
// wait for a running call (Leave and Close may be called from a Handler).
// Publish completion callbacks (PublishAsync) run on the reader goroutine
// and must not block.
//
// # Data path
//
// Copies are kept to one per hop. The client encodes each publish once,
// into a block shared by consecutive publishes (reused once all of its
// frames are acknowledged), and its writer sends a run of them with one
// vectored write. The relay's reader parses in place and encodes each
// event once, into a block of its channel's log; the connection writer
// sends runs of consecutive events straight from the log with one
// vectored write per round (through a buffer on TLS), and acknowledgements
// of consecutive publishes are sent as one range per read. The receiving
// client copies each event's payload once (the Handler owns Event.Data)
// and its member goroutine delivers a batch per wake-up (in calls of up
// to 256 events to a transport.BatchHandler).
package relay
