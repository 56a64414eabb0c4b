// Package registry loads a root folder of live object definitions and
// keeps it live.
//
// A root is laid out as the original distribution's installation folder:
//
//	channels/<ID>/metadata.xml        one folder per channel
//	registry/<KEY>/<name>.liveobject  exactly one definition per key
//	services/<name>.liveobject        services the daemon hosts (null objects are off)
//	examples/...                      any tree of *.liveobject files
//
// Open reads every *.liveobject file below the root (deep folders, names
// with spaces and hidden files included; symbolic links to files are
// followed, to folders are not; a FIFO, device or socket that carries a
// definition's name is reported, never read) and every channel's metadata,
// collecting problems instead of failing: Problems lists each with file
// and line. It refuses a folder inside a mount of live objects
// (ErrInMount): the files there are live objects, and reading them would
// join each one and wait on it; the mount's top folder names the root it
// shows (MountRootAttr). Lookup, Key, Objects and Channels read the
// loaded state; Resolve follows the From chains of a definition through
// the registry (reporting dangling keys and cycles), and Binding says what
// joining an object means: class, type, channel, driver and driver
// settings. The shape of an object bound to a channel is described in
// package objects.
//
// Watch keeps the state in line with the disk using fsnotify (every
// folder, new ones included). A file that becomes invalid keeps its last
// good definition in force and reports the problem. Subscribe delivers
// change notifications; a subscriber that falls behind loses the oldest
// changes and receives a Resync.
//
// Init writes a fresh root (InitFiles lists its content). Service
// definitions it writes, for the services package:
//
//	services/cc.liveobject                       relay server (ClassRelayServer), on:
//	                                             "address" xsd:string, "durable" xsd:boolean,
//	                                             "server" -> registry key KeyRelayServer
//	services/quicksilver_localservice.liveobject QSM local service, null (definition in a comment):
//	                                             "service" -> KeyQSMLocalService (Configuration)
//	services/quicksilver_coordinator.liveobject  QSM coordinator, null: "service" -> KeyQSMCoordinator
//	services/mo.liveobject                       micro-object server, null: "server" -> KeyMOServer
//	                                             ("address", "store", "cache")
//
// # Concurrency
//
// A Root is safe for concurrent use. mu (a RWMutex) protects the loaded
// state; loadMu serializes loading (the watcher goroutine, CreateChannel,
// RemoveChannel) so an older read never replaces a newer one; subMu
// protects the subscriptions. Lock order: loadMu, then subMu, then mu; no
// notification is sent while mu is held. The only goroutine is the
// watcher started by Watch; it is owned by the Root and stopped by Close
// (idempotent) or by the context given to Watch. Definitions handed out
// (Entry.Def) are shared and must not be modified.
package registry
