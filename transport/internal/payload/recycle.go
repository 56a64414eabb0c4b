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
	buf  []byte
	refs atomic.Int32 // payloads cut and not released, +1 while the Recycler cuts from it
}

// Release gives up one payload cut from b, after its last use. The last
// release makes b reusable.
func (b *Block) Release() {
	switch n := b.refs.Add(-1); {
	case n == 0:
		blockPool.Put(b)
	case n < 0:
		panic("payload: block released more often than payloads were cut from it")
	}
}

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
		return &Block{buf: make([]byte, 0, BlockSize)}
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
type Recycler struct{ cur *Block }

// Copy returns a copy of p and the block it was cut from, to be released
// once the copy is no longer used. Payloads larger than MaxShared, and
// every copy made by a nil *Recycler, are allocations of their own, with
// a nil block.
func (r *Recycler) Copy(p []byte) ([]byte, *Block) {
	if r == nil || len(p) > MaxShared {
		return append([]byte(nil), p...), nil
	}
	if r.cur == nil || cap(r.cur.buf)-len(r.cur.buf) < len(p) {
		if r.cur != nil {
			r.cur.Release()
		}
		r.cur = blockPool.Get().(*Block)
		r.cur.buf = r.cur.buf[:0]
		r.cur.refs.Store(1)
	}
	b := r.cur
	n := len(b.buf)
	b.buf = append(b.buf, p...)
	b.refs.Add(1)
	return b.buf[n:len(b.buf):len(b.buf)], b
}
