// Package payload copies received event payloads into shared blocks, so
// that the payloads of many events cost one allocation. The drivers' read
// loops use it: each payload they hand to a Handler is its own (the
// Handler may keep it), yet it is cut from a block shared with its
// neighbours.
//
// Concurrency: a Blocks belongs to one goroutine (a read loop); the
// payloads it returns may be passed to and kept by any goroutine.
package payload
