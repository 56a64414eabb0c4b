package micro

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// TestClaimedLengthNotAllocated: peers that announce maximal frames and
// then send almost nothing must not make the server allocate what they
// announced. Before the fix, 64 such connections pinned 256 MiB.
func TestClaimedLengthNotAllocated(t *testing.T) {
	s := startServer(t, nil)
	const conns = 64
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var cs []net.Conn
	hello := helloMsg{min: protoMin, max: protoMax, addr: netip.MustParseAddrPort("127.0.0.1:1")}
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
		t.Cleanup(func() { c.Close() })
		if err := writeFrame(c, msgHello, 0, hello.encode()); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if f, err := readFrame(c, MaxFrame); err != nil || f.typ != msgHelloAck {
			t.Fatalf("hello: %v %d", err, f.typ)
		}
		var h [frameHeader + 16]byte
		h[0] = msgFetch
		binary.BigEndian.PutUint32(h[5:9], MaxFrame)
		if _, err := c.Write(h[:]); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the server has read every header and the bytes that
	// followed: by then it has made room for every body.
	want := int64(conns * (frameHeader + len(hello.encode()) + frameHeader + 16))
	checkFor(t, 10*time.Second, func() error {
		if got := s.Stats().PeerBytesRead; got < want {
			return fmt.Errorf("the server read %d bytes of %d connections' frames, want %d", got, conns, want)
		}
		return nil
	})
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %d KiB for %d connections", grown>>10, conns)
	if grown > conns*MaxFrame/4 {
		t.Fatalf("heap grew by %d MiB for %d connections that sent 16 body bytes each", grown>>20, conns)
	}
	// The server still serves, and a frame that does arrive in full is read.
	for _, c := range cs[:1] {
		rest := make([]byte, MaxFrame-16)
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(rest); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := readFrame(c, MaxFrame)
		if err != nil || f.typ != msgError {
			t.Fatalf("answer to a full frame: %v type %d", err, f.typ)
		}
	}
}
