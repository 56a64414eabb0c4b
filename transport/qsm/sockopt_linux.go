package qsm

import (
	"errors"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// listenControl sets SO_REUSEADDR before bind, so that several services on
// one host can share the multicast port.
func listenControl(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// setMulticastAll turns IP_MULTICAST_ALL off, so that a socket bound to the
// wildcard address receives only the groups it joined itself, not those
// other sockets on the host joined.
func setMulticastAll(conn *net.UDPConn, on bool) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	v := 0
	if on {
		v = 1
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, v)
	}); err != nil {
		return err
	}
	return serr
}

// setBuffers asks for large socket buffers; failures are ignored (the
// kernel caps them).
func setBuffers(conn *net.UDPConn, n int) {
	conn.SetReadBuffer(n)
	conn.SetWriteBuffer(n)
}

// gsoMaxSegments is the most datagrams one segmentation offload send
// carries (the kernel's UDP_MAX_SEGMENTS is 64 or more), and gsoMaxBytes
// the most payload it may hold (an IPv4 datagram's limit).
const (
	gsoMaxSegments = 64
	gsoMaxBytes    = 65507
)

// gsoAvailable reports whether this platform can send several datagrams
// of one size in one buffer (UDP_SEGMENT) and read them back in one
// (UDP_GRO).
const gsoAvailable = true

// setGRO asks the kernel to hand datagrams of one flow over in one buffer
// (UDP_GRO), the segment size in a control message; false when it cannot.
func setGRO(conn *net.UDPConn) bool {
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

// gsoOOBSize is the room one UDP_SEGMENT or UDP_GRO control message takes.
var gsoOOBSize = unix.CmsgSpace(4)

// appendGSO appends a control message that makes the kernel cut one send
// into datagrams of seg bytes (UDP_SEGMENT).
func appendGSO(b []byte, seg int) []byte {
	n := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[n]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[n+unix.CmsgLen(0)])) = uint16(seg)
	return b
}

// groSegment returns the segment size a UDP_GRO control message in oob
// gives, or 0.
func groSegment(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])))
		}
		sp := unix.CmsgSpace(l - unix.CmsgLen(0))
		if sp > len(oob) {
			return 0
		}
		oob = oob[sp:]
	}
	return 0
}

// offloadRefused reports whether a send failed because the route cannot
// segment (no checksum offload, or an old kernel).
func offloadRefused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOPROTOOPT)
}
