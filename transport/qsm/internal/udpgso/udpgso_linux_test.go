package udpgso

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// groMessage builds the control message the kernel gives with UDP_GRO.
func groMessage(seg int32) []byte {
	b := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	*(*int32)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = seg
	return b
}

func TestSegment(t *testing.T) {
	other := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&other[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TTL
	h.SetLen(unix.CmsgLen(4))
	for _, c := range []struct {
		name string
		oob  []byte
		want int
	}{
		{"gro", groMessage(1472), 1472},
		{"after another message", append(append([]byte(nil), other...), groMessage(1400)...), 1400},
		{"none", nil, 0},
		{"another message only", other, 0},
		{"truncated", groMessage(1472)[:unix.SizeofCmsghdr+1], 0},
		{"length past the end", func() []byte { b := groMessage(9); b[0] = 0xff; return b }(), 0},
		{"negative", groMessage(-5), 0},
		{"over a datagram", groMessage(70000), 0},
	} {
		if got := Segment(c.oob); got != c.want {
			t.Errorf("%s: Segment = %d, want %d", c.name, got, c.want)
		}
	}
	if b := AppendSegment(nil, 1472); len(b) != unix.CmsgSpace(2) {
		t.Errorf("AppendSegment made %d bytes, want %d", len(b), unix.CmsgSpace(2))
	}
}

// FuzzSegment: any control message bytes give 0 or a size a datagram can
// have, and never a crash.
func FuzzSegment(f *testing.F) {
	f.Add(groMessage(1472))
	f.Add([]byte{})
	f.Add(make([]byte, unix.SizeofCmsghdr))
	f.Fuzz(func(t *testing.T, oob []byte) {
		if seg := Segment(oob); seg < 0 || seg > MaxBytes {
			t.Fatalf("Segment = %d for % x", seg, oob)
		}
	})
}
