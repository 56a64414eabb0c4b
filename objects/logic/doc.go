// Package logic holds the object logic of the live objects this project
// implements: a stream (chat-like, with an optional bounded history), a
// variable (a replicated value; the last write in the total order wins) and
// a text (a shared text note). Each is a transport.Handler, so a
// communication driver delivers its events and takes and restores its
// checkpoints; each also feeds any number of local readers (the open files
// of a mount, a "sub" command) and turns what a user writes into events.
//
// The package knows nothing of FUSE and nothing of sockets: it decides what
// a read returns and what a write publishes; fs/ only adapts it.
//
// # Formats
//
// Stream events are lines: a reader sees each event followed by a newline
// (one is added when the event does not end in one). Its checkpoint is the
// retained history, each event length-prefixed. A variable's checkpoint
// and events are its whole value; a reader sees the value, then each new
// value, each ended by a newline. A text's checkpoint and events are the
// whole text; a reader sees the text, then each new text as it replaces
// the old one.
//
// # Concurrency
//
// An Object is safe for concurrent use. One mutex per Object protects its
// state and its set of readers; the driver's calls (Deliver, Checkpoint,
// Restore) and readers' calls take it briefly and never block under it.
// Deliver appends to each reader's queue and wakes it; a reader whose queue
// grows past its bound is resynchronised from the state (variable, text) or
// ended with ErrOverrun (stream), never silently truncated. Reader.Read
// blocks until data, end of object, or its context's end. Writers are used
// by one goroutine at a time (one per open file handle).
package logic
