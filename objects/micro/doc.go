// Package micro is the micro-object (MO) system of Wams and van Steen's
// "Simplified Distributed Programming with Micro Objects": small immutable
// objects named by tokens that anyone can compute and check, add-only
// clusters of tokens that grow into graphs (distributed application
// objects), and a per-host MO server that stores, caches and replicates
// them by local policy.
//
// # The object
//
// The distributed part of a micro object is an immutable payload (Object:
// header fields, sealed payload, writer signature) and a mutable cluster
// (a set of Entry values: member tokens signed by the object's writer key,
// add-only, ordered by copy-expire date). The non-distributed part is the
// closed shared section (Keys: the AES-256-GCM payload key and the Ed25519
// writer key, held by the application only) and the openly shared section
// (the replication policies of the local copy and their data: the peers
// known to share it, which need not converge).
//
// A Token is 59 bytes: copy-expire date (Unix ms, big-endian, so that byte
// order is expire order), layout version, the home server's IP address and
// port, and a SHA-256 over those fields, the writer's public key, a salt
// and the sealed payload. Tokens are computed locally (Object.Token);
// Object.Verify checks an object against a token and its signature, and
// every server does so before it caches or serves what it fetched: a
// mismatch is rejected and counted in Stats.Rejected.
//
// # Security
//
// Payloads are sealed with AES-256-GCM (the header is the additional data)
// and objects and cluster entries are signed with Ed25519. Keys never
// leave the application's Lib; a server stores what it cannot read, and
// checks signatures against the public key inside the object, so that only
// holders of the group's writer key can add to a cluster. By default
// cluster members are visible to servers as tokens (home, expiry and a
// hash, never content), so that servers can follow references for
// flooding levels above 0 (the file DAO needs this). An object created
// with CreateOptions.SealedCluster (FlagSealedCluster, bound into its
// token) has a sealed cluster: each member is an opaque id (its expire
// date and a keyed hash, the same at every copy) with the member token in
// a deterministic AES-256-GCM box; servers reconcile and flood such a
// cluster at level 0 without being able to read it. A server accepts flooded items
// only for objects it floods itself (see Flooding); a peer's claimed
// address is learned only when it matches the connection's source IP.
//
// # The server
//
// Server keeps its store (objects it is home for, kept until their
// copy-expire date plus ServerConfig.Grace, and objects pinned by a policy;
// SUSTAINed objects beyond that), its LRU cache bounded by
// ServerConfig.CacheBytes, the clusters and the replication state in one
// bbolt file, DataDir/mo.db. Records carry magic, version and checksum.
//
// Remote requests (wire.go) travel over TCP as frames "type u8, id u32,
// length u32, body", after a HELLO carrying protocol versions and the
// caller's peer address: FETCH (by token) answered by the object, by
// NOT-FOUND with a ditto-list, or by BUSY with a ditto-list (servers that
// asked for the same object before; the requester re-routes to them);
// ASSENT, range-based reconciliation of a cluster (reconcile.go: 3 round
// trips and about 1% of a full exchange for 10^5 tokens with 100
// differences); OFFER/PUSH for objects flooded at odd levels.
//
// Local requests (Local, local.go) come from trusted applications: ADOPT,
// REPLICATE, UPDATE, REQUEST-PAYLOAD, plus Sync, Cluster, WaitChange and
// Shared. *Server implements Local in process; LocalClient implements it
// over the unix socket DataDir/mo.sock (mode 0600), which the
// "liveobjects mo" commands use.
//
// # The library
//
// Lib mirrors the paper's lib-server: CreateNew (mo_create_new),
// CreateCopy (mo_create_copy), MO.Add (mo_cter_add_mo), MO.PutReplication
// (mo_put_repl), MO.Token / MO.Payload / MO.Cluster (mo_get_*), MO.OnNew
// with a Tracker (mo_put_cter_clbk), MO.Wait (mo_cter_wait) and MO.TryWait
// (mo_cter_try_uwait).
//
// # The distributed file
//
// File is the paper's file DAO: file -> blocks -> content versions. The
// API for a mount:
//
//	f, err := micro.OpenFile(ctx, lib, token)      // or CreateFile(ctx, lib, name, data, opts)
//	data, err := f.ReadAll(ctx)                     // current content (local knowledge)
//	err = f.Write(ctx, data)                        // new content objects for changed blocks
//	err = f.Share(ctx, 3)                           // flood: 2 = block clusters, 3 = also contents
//	for range f.Changes() { ... }                   // coalesced change notifications
//	files, err := micro.SharedFiles(ctx, lib)       // files this server shares
//	f.Close()
//
// ReadAll never blocks on peers for a file shared at level 2 or more except
// to fetch content payloads the server lacks (never at level 3); Refresh
// harmonizes an unshared file with its home.
//
// # Concurrency
//
// Server, LocalClient, Lib, MO, Tracker, Set and File are safe for
// concurrent use. The server owns its goroutines: two accept loops (peer
// TCP, local socket), one per connection, the sweeper and the flooder (the
// only goroutine that floods; passes are queued per root object). All are
// counted in a WaitGroup; Close closes the listeners and connections,
// cancels the server's context, waits for them, then closes the bbolt
// file; Close is idempotent. Mutexes: Server.mu guards listeners,
// connections and the closed flag; chMu the change sequence and its
// broadcast channel; setsMu the clusters cached in memory for
// reconciliation (valid while their change number holds); dittoMu the
// ditto-lists; floodMu the flood queue;
// store.mu the LRU sequence and the cache hits not yet written (taken
// inside bbolt write transactions, never the other way round; chMu may
// also be taken inside one, when the store drops a cluster; the cache
// size is kept in the bbolt file, so it changes only when a transaction
// commits); pool.mu idle peer connections. No
// lock is held across network I/O. A flooding pass talks to up to eight
// peers at once, on goroutines it waits for. A Lib owns one
// goroutine per OnNew callback (callbacks run one at a time and may
// block); a File owns the goroutine behind Changes; Close stops them.
package micro
