package payload

import (
	"bytes"
	"fmt"
	"testing"
	"unsafe"
)

// TestRecycler: a block is reused only once every payload cut from it is
// released and the recycler has moved on to another block; until then its
// payloads keep their bytes.
func TestRecycler(t *testing.T) {
	var r Recycler
	p := bytes.Repeat([]byte{1}, 1000)
	var held [][]byte
	var blocks []*Block
	for range BlockSize / 1000 {
		c, b := r.Copy(p)
		held, blocks = append(held, c), append(blocks, b)
	}
	first := blocks[0]
	for _, b := range blocks {
		if b != first {
			t.Fatal("payloads that fit one block were cut from several")
		}
	}
	// Moving on to a second block, while the first block's payloads are
	// all held: nothing is reused.
	c2, b2 := r.Copy(bytes.Repeat([]byte{2}, 1000))
	if b2 == first {
		t.Fatal("a full block was cut from again")
	}
	for _, b := range blocks[1:] {
		b.Release()
	}
	if !bytes.Equal(held[0], p) {
		t.Fatal("the first block's held payload changed")
	}
	if first.refs.Load() != 1 {
		t.Fatalf("first block counts %d payloads, want 1", first.refs.Load())
	}
	first.Release()
	if first.refs.Load() != 0 {
		t.Fatalf("first block counts %d after its last release", first.refs.Load())
	}
	if !bytes.Equal(c2, bytes.Repeat([]byte{2}, 1000)) {
		t.Fatal("payload of the second block changed")
	}
	b2.Release()
	if b2.refs.Load() <= 0 {
		t.Fatal("the block being cut from went back while the recycler cuts from it")
	}
	big := bytes.Repeat([]byte{3}, MaxShared+1)
	if c, b := r.Copy(big); b != nil || !bytes.Equal(c, big) || &c[0] == &big[0] {
		t.Fatal("a large payload was not copied on its own")
	}
	// An empty payload takes no block: a block only empty payloads were
	// cut from would never be moved on from, its bias never settled.
	if c, b := r.Copy(nil); b != nil || c == nil || len(c) != 0 {
		t.Fatalf("empty payload: %v %v", c, b)
	}
	var none *Recycler
	if c, b := none.Copy([]byte("x")); b != nil || string(c) != "x" {
		t.Fatal("nil Recycler")
	}
	// Copies never overlap their neighbours, even appended to.
	a, _ := r.Copy([]byte("ab"))
	d, _ := r.Copy([]byte("cd"))
	_ = append(a, 'x')
	if string(d) != "cd" || uintptr(unsafe.Pointer(&d[0])) != uintptr(unsafe.Pointer(&a[0]))+2 {
		t.Fatalf("neighbouring copies: %q %q", a, d)
	}
}

// TestRecyclerDoubleRelease: releasing more payloads than were cut is a
// bug that would hand the same bytes to two holders; it panics.
func TestRecyclerDoubleRelease(t *testing.T) {
	var r Recycler
	_, b := r.Copy([]byte("x"))
	b.Release()
	r.moveOn() // the recycler's own hold: the block goes back
	if n := b.refs.Load(); n != 0 {
		t.Fatalf("block counts %d payloads after its only one was released and the recycler moved on", n)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a third release did not panic")
		}
	}()
	b.Release()
}

// A payload with a second holder (Retain) keeps its block until both
// have released it; retaining a block that went back panics.
func TestBlockRetain(t *testing.T) {
	var r Recycler
	_, b := r.Copy([]byte("x"))
	b.Retain()
	b.Release()
	r.moveOn() // the recycler's hold
	if n := b.refs.Load(); n != 1 {
		t.Fatalf("block counts %d holders after one of two released and the recycler moved on, want 1", n)
	}
	b.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("retaining a block after its last release did not panic")
		}
	}()
	b.Retain()
}

// TestRecyclerConcurrentRelease: payloads released on another goroutine
// while the recycler goes on cutting keep their bytes until released, and
// their blocks are reused.
func TestRecyclerConcurrentRelease(t *testing.T) {
	type held struct {
		i    int
		data []byte
		b    *Block
	}
	pattern := func(i int) []byte {
		p := make([]byte, 1000)
		for j := range p {
			p[j] = byte(i + j)
		}
		return p
	}
	const n = 100000
	ch := make(chan held, 256)
	errs := make(chan string, 1)
	go func() {
		defer close(errs)
		for h := range ch {
			if !bytes.Equal(h.data, pattern(h.i)) && len(errs) == 0 {
				errs <- fmt.Sprintf("payload %d changed before its release", h.i)
			}
			h.b.Release()
		}
	}()
	made := BlocksMade()
	var r Recycler
	for i := range n {
		c, b := r.Copy(pattern(i))
		ch <- held{i, c, b}
	}
	close(ch)
	for e := range errs {
		t.Fatal(e)
	}
	// Without reuse: 100 MB in 64 KiB blocks, 1,526 of them. With reuse a
	// few dozen, and about 400 under the race detector, whose sync.Pool
	// drops a quarter of what it is given.
	if got := BlocksMade() - made; got > 800 {
		t.Fatalf("%d blocks made for %d payloads of 1000 bytes; released blocks are not reused", got, n)
	}
}
