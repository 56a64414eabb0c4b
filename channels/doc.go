// Package channels is the per-process communication client: a Hub holds
// one driver per substrate and address (one relay connection carries every
// channel of the process), and one live object per channel, shared by
// every local user of it (the open files of a mount, a script) and left
// when the last of them lets go. A substrate gives a process one
// membership per channel, so objects that share a channel share its live
// object: they must be of one kind (and streams keep one history); an
// object of another kind is refused with ErrConflict while the channel is
// joined.
//
// A driver or membership can end on its own (transport.Ender: a QSM
// client whose local service went away, a relay membership whose channel
// was removed or whose join the relay refused after a reconnection). A
// live object whose membership ended leaves the table; its readers reach
// end of file when the channel was removed, and otherwise end with
// ErrEnded, since events may have been missed. The next Acquire dials the
// substrate afresh if its driver ended, and joins anew.
//
// The Hub does not know drivers by type: the program gives it a DialFunc
// (cmd/liveobjects wires in transport/relay and transport/qsm), so this
// package depends only on transport and objects/logic.
//
// # Concurrency
//
// A Hub is safe for concurrent use. Hub.mu protects the maps of drivers
// and live objects; it is never held across a network call. Concurrent
// Acquire calls for one channel wait for the first one's join (a
// per-entry ready channel) instead of joining twice. A live object whose
// membership can end on its own has one goroutine waiting for that end
// or for the object to be left (Live.stop), whichever comes first. Lock
// order: Hub.mu before Live.mu.
package channels
