// Package payload copies received event payloads into shared blocks, so
// that the payloads of many events cost one allocation. The drivers' read
// loops use it: each payload they hand to a Handler is its own (the
// Handler may keep it), yet it is cut from a block shared with its
// neighbours (Blocks). A holder that knows when it is done with its
// copies releases them, and their blocks are used again (Recycler).
//
// Concurrency: a Blocks or a Recycler belongs to one goroutine (a read
// loop); the payloads it returns may be passed to and kept by any
// goroutine, and a Block may be released from any goroutine.
package payload
