package udpgso

import (
	"errors"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxSegments is the most datagrams one segmentation offload send
// carries (the kernel's UDP_MAX_SEGMENTS is 64 or more), and MaxBytes
// the most payload it may hold (an IPv4 datagram's limit).
const (
	MaxSegments = 64
	MaxBytes    = 65507
)

// Available reports whether this platform can send several datagrams
// of one size in one buffer (UDP_SEGMENT) and read them back in one
// (UDP_GRO).
const Available = true

// SetGRO asks the kernel to hand datagrams of one flow over in one buffer
// (UDP_GRO), the segment size in a control message; false when it cannot.
func SetGRO(conn *net.UDPConn) bool {
	rc, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}); err != nil {
		return false
	}
	return serr == nil
}

// OOBSize is the room one UDP_SEGMENT or UDP_GRO control message takes.
var OOBSize = unix.CmsgSpace(4)

// AppendSegment appends a control message that makes the kernel cut one send
// into datagrams of seg bytes (UDP_SEGMENT).
func AppendSegment(b []byte, seg int) []byte {
	n := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[n]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[n+unix.CmsgLen(0)])) = uint16(seg)
	return b
}

// Segment returns the segment size a UDP_GRO control message in oob
// gives, or 0 (also for a size no datagram could have).
func Segment(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			seg := int(*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])))
			if seg <= 0 || seg > MaxBytes {
				return 0
			}
			return seg
		}
		sp := unix.CmsgSpace(l - unix.CmsgLen(0))
		if sp > len(oob) {
			return 0
		}
		oob = oob[sp:]
	}
	return 0
}

// Refused reports whether a send failed because the route cannot
// segment (no checksum offload, or an old kernel).
func Refused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOPROTOOPT)
}
