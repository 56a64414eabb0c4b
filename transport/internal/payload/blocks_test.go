package payload

import (
	"bytes"
	"testing"
	"unsafe"
)

// TestBlocks: copies cut from one block hold what was copied, do not
// overlap even when one is appended to, and large payloads or a nil
// Blocks get their own allocations.
func TestBlocks(t *testing.T) {
	var pb Blocks
	src := []byte("abc")
	a := pb.Copy(src)
	b := pb.Copy([]byte("def"))
	src[0] = 'z'
	a = append(a, 'x')
	if string(b) != "def" || string(a) != "abcx" {
		t.Fatalf("a %q b %q", a, b)
	}
	big := bytes.Repeat([]byte{7}, MaxShared+1)
	c := pb.Copy(big)
	if !bytes.Equal(c, big) || &c[0] == &big[0] {
		t.Fatal("large payload not copied")
	}
	d := pb.Copy([]byte("ghi"))
	if uintptr(unsafe.Pointer(&d[0])) != uintptr(unsafe.Pointer(&b[0]))+3 {
		t.Fatal("a small payload after a large one is not cut from the same block")
	}
	var none *Blocks
	if e := none.Copy([]byte("jk")); string(e) != "jk" {
		t.Fatalf("nil Blocks: %q", e)
	}
}
