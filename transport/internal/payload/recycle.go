package payload

import (
	"sync"
	"sync/atomic"
)

// Block is a block that a Recycler cuts payload copies from. It is used
// again once every payload cut from it has been released: a payload that
// is never released only keeps its block from being reused (the collector
// frees it in the end), but a payload released twice, or used after its
// release, would share its bytes with a later payload.
type Block struct {
	// refs counts the payloads cut from the block and not released.
	// While a Recycler cuts from the block, refs also holds bias, and the
	// payloads cut are added only when the Recycler moves on: a Copy then
	// writes no memory that the goroutines releasing payloads write.
	refs atomic.Int32
	_    [cacheLine - 4]byte // refs, written by every releasing goroutine, has its line to itself
	buf  []byte              // BlockSize bytes
}

// cacheLine is the size of a cache line on the machines this runs on.
const cacheLine = 64

// bias stands for the payloads of the block a Recycler is cutting from,
// not counted yet: more than a block could hold, so that refs stays
// positive however many of them are released meanwhile.
const bias = 1 << 30

// add adds d to the count of b's payloads; the count reaching zero makes
// b reusable.
func (b *Block) add(d int32) {
	switch n := b.refs.Add(d); {
	case n == 0:
		blockPool.Put(b)
	case n < 0:
		panic("payload: block released more often than payloads were cut from it")
	}
}

// Release gives up one payload cut from b, after its last use. The last
// release makes b reusable.
func (b *Block) Release() { b.add(-1) }

// Retain takes one more reference to b for a payload cut from it that
// gets a second holder; each Retain is matched by a Release.
func (b *Block) Retain() {
	if b.refs.Add(1) <= 1 {
		panic("payload: block retained after its last release")
	}
}

var (
	blockPool = sync.Pool{New: func() any {
		blocksMade.Add(1)
		return &Block{buf: make([]byte, BlockSize)}
	}}
	blocksMade atomic.Int64
)

// BlocksMade returns how many blocks Recyclers have allocated so far (the
// others they cut from were reused).
func BlocksMade() int64 { return blocksMade.Load() }

// Recycler cuts payload copies from Blocks that are reused once their
// payloads are released, so that a holder that knows when it is done
// with its payloads (the QSM engine, when messages become stable) spares
// the allocation and the zeroing of fresh blocks. The zero value is ready
// to use.
type Recycler struct {
	cur  *Block
	buf  []byte // cur.buf
	used int    // bytes of buf cut
	cut  int32  // payloads cut from cur
}

// Copy returns a copy of p and the block it was cut from, to be released
// once the copy is no longer used. Payloads larger than MaxShared, and
// every copy made by a nil *Recycler, are allocations of their own, with
// a nil block; an empty payload is an empty slice, with a nil block (it
// takes no room, so the Recycler would never move on from a block that
// only empty payloads were cut from, and bias would not cover them).
func (r *Recycler) Copy(p []byte) ([]byte, *Block) {
	if len(p) == 0 {
		return []byte{}, nil
	}
	if r == nil || len(p) > MaxShared {
		return append([]byte(nil), p...), nil
	}
	if r.cur == nil || len(r.buf)-r.used < len(p) {
		r.moveOn()
		b := blockPool.Get().(*Block)
		b.refs.Store(bias)
		r.cur, r.buf, r.used, r.cut = b, b.buf, 0, 0
	}
	n := r.used
	r.used += copy(r.buf[n:], p)
	r.cut++
	return r.buf[n:r.used:r.used], r.cur
}

// moveOn stops cutting from the current block: the payloads cut from it
// are counted in, in place of bias, and the block goes back for reuse at
// once if they have all been released.
func (r *Recycler) moveOn() {
	if b := r.cur; b != nil {
		r.cur, r.buf = nil, nil
		b.add(r.cut - bias)
	}
}
