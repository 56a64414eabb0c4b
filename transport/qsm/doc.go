// Package qsm is the QuickSilver Scalable Multicast driver: reliable
// delivery to the current members of a channel, FIFO per sender, numbered
// membership views; no total order and no state transfer (a joiner gets the
// events published after its join). It scales in the number of channels:
// nodes with the same channels share one region, and everything the
// protocol does per region is paid once however many channels the region
// carries.
//
// # Roles
//
//   - Coordinator (coordinator.go): keeps the channels and hosts the global
//     membership service. Local services tell it over TCP which groups
//     (channels) they join and leave and send heartbeats; it issues numbered
//     views (View) to all of them, the same at every node, and removes a node
//     silent for HeartbeatInterval x MissedHeartbeats. A view lists the nodes
//     and the regions: the nodes with the same set of groups, each with a
//     multicast address of its own and an epoch (the view in which its member
//     set last changed).
//   - Service (service.go, engine.go, token.go): one per machine. It runs the
//     protocol stack and the multicast sockets (TTL 1) and serves the
//     in-process clients of the machine over TCP (the uplink) and, on Linux,
//     over an abstract Unix socket named after the uplink address, which only
//     processes in the service's network namespace reach.
//   - Client (client.go): one per process, one link to the local service
//     carrying every QSM channel of the process (the local socket when the
//     service has one, else TCP); it implements transport.Driver. A
//     process that hosts the service itself attaches its client to it
//     (Service.Attach, attach.go): QSM as a library, with no socket between
//     them and deliveries handed over without encoding. A client does not
//     reconnect: when its link to the service is lost, it and its members
//     end (transport.Ender), since events sent meanwhile would be missed,
//     and the caller dials again.
//
// # Protocol
//
// A sender keeps one stream per region it sends into; an event to a group is
// multicast into each region of the group with the next sequence number of
// that region's stream, packed with other small messages into datagrams of
// up to MTU bytes (events larger than a datagram are split into fragments
// with consecutive numbers). Receivers deliver each stream in sequence
// order, which gives FIFO per sender and group.
//
// Dissemination is unreliable; repair runs per region. The region's nodes
// (sorted by id) are cut into partitions of about PartitionSize nodes, each
// with a token ring; the partition leaders form a ring of their own. A
// partition token carries, per stream, what each node holds (the prefix it
// has, and the gaps above it); a node holding a message another lacks sends
// it on and strikes it from the token. When the round ends, the leader knows
// what the whole partition holds. Each hop sends the token twice and the
// next node takes the first copy, so that a token lost on the network seldom
// costs its ring a round timeout. The region token carries these summaries
// through the partitions' leaders; a leader holding what a whole partition
// lacks sends it to that partition's leader (which spreads it in its own
// ring) and strikes it from the token. The region's leader then tells each
// sender (dgAck) the highest number every member holds — the sender frees
// everything up to it (stability) — and what to send again: into the region
// by multicast when the whole region lacks it, to a partition's leader when
// one partition does and no leader could forward it. The region's leader
// also puts the region's stable point into the next region token; with more
// than one partition a node frees a message only below it (and below its own
// partition's), so that a leader still holds what another partition lacks if
// the sender fails. A stream stays in its partition's token until the ring
// has been told its latest stable point, so that every node frees its
// copies. What one node has lacked for two rounds in a row, its peers could
// not forward (a node that entered the region later than another counts, by
// its start point, seqs it never had as held): the partition's leader asks
// the sender to send it to that node (an ack with naks naming it, at most
// 256 seqs a round). Above the newest seq a node has seen, it is asked for
// only once the node has stopped moving on: a node that falls behind a fast
// sender, with more than a round of datagrams waiting in its socket, would
// otherwise be sent each of them twice. Senders announce the end of their
// stream while anything is unstable, so that a lost tail is noticed.
//
// Flow control: a sender holds at most Window unstable messages per region;
// publishes beyond that wait (their acknowledgement to the client is held
// back, and each in-process client has ClientCredits publishes in flight).
// Rate caps the messages a service multicasts per second. A receiver whose
// clients do not keep up (DeliveryQueue) refuses incoming data, which is
// then repaired later and, through the window, slows the senders. Data
// datagrams are read and written in batches (recvmmsg, sendmmsg); on Linux
// a run of datagrams of one size to one address goes to the kernel as one
// buffer that it cuts into datagrams (UDP_SEGMENT), and datagrams that
// arrive together are read as one buffer and cut again here (UDP_GRO).
// Each datagram keeps its own header and checksum, so the wire format is
// the same; a route that cannot segment turns it off (and NoOffload does).
//
// A join completes when every node has acknowledged the view that added
// the joiner (the coordinator announces each view that all nodes have
// installed), so every event published after Join returns reaches the new
// member. A joiner starts each stream where the sender was when it
// installed that view (the data header carries that point, and, while
// they are not stable, the start points of up to four earlier epochs of
// the stream, so that a node whose first datagram is of a later epoch
// still starts at its own); members older than the stream start at its
// beginning. A service tells the coordinator the groups its clients joined
// and left since its last flush in one frame, and the coordinator merges
// them into the node's sorted group set: a client that joins thousands of
// groups at once costs a few frames and views, each linear in the node's
// groups.
//
// # Region changes
//
// A node whose group set changes moves to another region in the view that
// changes it: it drops the streams into its old region and starts those of
// the new one. The events of a group it keeps that were in flight in the
// old region are handed over by their senders. When a sender installs a
// view, it looks for the nodes that moved between its previous view and
// this one; for each region they moved into, it takes the unstable
// messages of its streams into the regions they came from (those whose
// groups the new region has), and sends each event again, once, in the
// order it published them, at the head of the new epoch of its stream into
// the new region, marked as handed over (engine.handover). This is the
// flush of a view change done by the senders: stability in the old region
// counted the mover until the sender installed the view (acks of the new
// epoch are refused before), so the mover holds at least the old stream's
// stable prefix and the copies take it on from there without a gap; a
// mover starts the new stream at the new epoch's start, right before the
// copies, whether it installs the view before or after the sender, and
// even when the first datagram it gets is of a later epoch (the epoch
// starts in the data header). Nothing waits for the flush: views are
// installed as before, publishes go on into the new regions, and the
// copies are repaired like any message of the new region's stream.
//
// Receivers deliver each event once: every publishing membership numbers
// its events (GSeq), and a receiver keeps the last one it delivered per
// sender and membership, dropping anything at or below it (copies it
// already had from its old region or that the old members of the new
// region got first-hand). A handed-over copy of a group the receiver did
// not keep across its own last move is an event published before it
// joined the group: it is noted, not delivered. So every member that stays
// in a group delivers every event of it exactly once, in FIFO order per
// sender, across any number of region changes, and a new member gets no
// handed-over event.
//
// # Wire formats
//
// Datagrams (wire.go) carry a versioned header with magic, a type byte and a
// CRC-32C checksum; every count and length is checked before anything is
// allocated. Foreign, truncated, corrupt or forged datagrams are counted in
// Stats and dropped. TCP links use length-prefixed frames with a type byte;
// the first frame is a hello with the protocol versions. Errors on the wire
// carry stable numeric codes.
//
// With a shared key (Config.Key, auth.go) every datagram also carries an
// HMAC-SHA256 tag and one without a valid tag is dropped, and the
// coordinator link opens with a nonce handshake in which both ends prove
// they hold the key; without one, a host on the LAN that speaks the
// protocol can forge datagrams, and only the checks above stand in its way.
//
// # Concurrency
//
// The service's protocol state is owned by one goroutine (engine.run), as in
// the original's single-threaded engine: packets, views and client requests
// reach it over channels (tokens and acks on a channel of their own that is
// served first, with the ticker that starts token rounds; data in batches
// that are dropped rather than queued when the engine is behind), and it
// writes datagrams and client frames itself, so the engine takes no locks.
// Two reader goroutines per service check and parse datagrams, copying
// payloads into blocks (payload.Recycler) that the engine releases, message
// by message, once it no longer keeps them: a block goes back to the readers
// when its last message is stable (a block's count is atomic; each message
// is released at most once, by the engine, and messages it drops without
// keeping are released right after their packet is handled); an accept loop
// per uplink listener (TCP, and the local socket) takes client links; one
// goroutine per client link reads frames, and a connWriter goroutine per
// link writes batched frames (connWriter.mu protects its buffer). The
// coordinator link has a reader (gmsLoop) and a heartbeat goroutine;
// Service.gmsMu protects the current coordinator writer and Service.connMu
// the set of client links. All of them are counted in Service.wg and end on
// Close. The package does not set GOMAXPROCS; the standalone commands
// (liveobjects qsm service and qsm coordinator) run with one P by default,
// so that these hand-offs switch goroutines on one thread rather than wake
// another thread (a wake-up that, on a loaded machine, costs more than the
// work handed over).
//
// In the coordinator, Coordinator.mu protects the node table and the
// current view; gmsNode.wmu serializes writes to one service link. One
// goroutine per service link, an accept loop, a sweeper (failure detection)
// and a view loop run until Close.
//
// In the client, one reader goroutine dispatches frames; four worker
// goroutines call the handlers, each member always on the same worker, one
// event at a time. Client.mu protects the member and request tables (the
// reader finds members in Client.byID, whose writers hold Client.mu);
// Member.ackMu the publishes in flight (held while a publish frame is
// queued, so acks match in order); Member.callMu is held during a handler
// call (Leave takes it to wait for a call in progress; the reader does not
// touch a member per event, so that the line the worker writes stays on the
// worker's core); worker.mu guards a worker's queue. Handlers should not
// block for long: a handler that blocks holds up the members sharing its
// worker, and once a worker has 65536 events queued the client stops reading
// from the service and the senders slow down. Leave must not be called from
// the member's own Handler.
//
// An attached client (attach.go) has the same workers and handlers. Its
// frames reach the service over a net.Pipe, read by one goroutine of the
// service's as a socket client's link is; the service's frames reach it
// through a directLink, whose mutex serializes the goroutines that write
// to a client (the engine, that reader, the coordinator link's). The
// engine hands deliveries to the link under that mutex and, when it
// flushes, to the client's workers without waiting: the bytes the workers
// hold (worker.bytes, an atomic) count as the client's queue, so a slow
// handler makes the service refuse data, repaired later, as a slow socket
// client does, and never blocks the engine. A member whose handler is a
// transport.Borrower is lent the engine's copy of each payload instead of
// a copy of its own: the engine takes one more reference to the payload's
// block (an atomic add) when it hands the event over, and the worker
// releases it once the handler has returned, so the block is not reused
// while the handler may read it, however long the event waits. A dialed
// client's reader, whose frame buffer is reused, copies a borrower's
// payloads into blocks of its own (payload.Recycler) that the workers
// release the same way.
//
// # Limits
//
// Region changes keep the events of kept groups (see above) while the
// senders and the coordinator stay up. When a sender fails, the survivors
// keep its stream in their tokens for a while (100 token rounds and at least
// a second, and until no repair has come for 20 rounds: its orphan time), so
// that each forwards what the others lack, and then settle it: each delivers
// what it holds in order, skipping a gap that no survivor could fill and the
// event after it (a message after a gap may be the tail of an event whose
// head is lost; the format cannot tell), so that the survivors deliver the
// same events (Stats.OrphanLost counts what was skipped). Across partitions,
// the region token carries the stream on from round to round with the
// highest seq any partition holds, so that a partition counts as missing
// what another holds and that partition's leader hands it over. What no
// survivor received is lost. When the coordinator link is re-established (a
// new session numbers views afresh, as after a coordinator restart) every
// stream restarts; each sender keeps the messages that were unstable and
// hands them over, as to a node that changed region, to each node of its old
// regions as that node comes back into a region of the new session (within a
// minute); receivers take them for the groups they had, and their delivery
// positions drop what they already delivered, so nothing is lost or
// delivered twice while the senders stay up. Publishes to a group wait until
// the nodes that had the group in the last session are back in it (at most
// five seconds, or twice the failure timeout), so that a node that
// reconnects later does not miss them. A handover sends every unstable
// message of the old streams (the sender does not know how far the mover
// got), up to a window per old region at once: beyond the window (new
// publishes wait until they are stable; Rate counts the copies too), and a
// multiple of the stream's traffic when nodes change region many times a
// second. Handovers and epoch starts came with protocol version 2; a service
// of version 1 is refused with a version error, not misread. Listing
// channels (Client.Channels, through the service to the coordinator) came
// with version 3; datagrams are still of version 2, and a client facing a
// service or coordinator of version 2 gets a version error from Channels
// while the rest works. A receiver keeps one delivery position (32 bytes)
// per publishing membership of its groups while the group has a local member
// and the sender is in the view, in a table per sender indexed by the
// sender's membership numbers (it keeps the size of the highest number seen
// below 65536). A joiner that loses every message of the epoch that added it
// and of the four epochs of the region after it starts at a later epoch's
// start point. Repair runs at token speed: a round visits every node of a
// partition TokenRate times a second at most, so a repair takes about one
// round when the network has room, and longer when senders saturate it (the
// window then fills with messages waiting for repair). A node reports up to
// 255 missing ranges per stream in one token visit (a build that allowed 64
// counts larger tokens as malformed, so nodes of one region run the same
// build); at 100,000 messages a second and 5% loss a node lacks about 150
// single messages per round of 30 ms, and a cap of 64 left repairs falling
// behind. Messages that come behind a gap wait in a ring indexed by seq
// (pending.go), not a map: under loss nearly every message passes through
// it. Every view lists each distinct group set in full (nodes that share one
// cost 8 bytes each), and a view must fit one frame (64 MiB): the
// coordinator refuses a node whose group set would take the view over it, as
// it refuses one in more than MaxGroups groups, so that the other nodes keep
// receiving views.
package qsm
