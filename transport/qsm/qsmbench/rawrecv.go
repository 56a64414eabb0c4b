package qsmbench

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/liveobjects/liveobjects/transport/qsm/internal/udpgso"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// RawReceipt is what a raw multicast receiver got.
type RawReceipt struct {
	// Bytes and Datagrams count what arrived.
	Bytes     int64 `json:"bytes"`
	Datagrams int64 `json:"datagrams"`
	// Last is the wall-clock time of the last arrival, in Unix
	// nanoseconds (0 when nothing arrived).
	Last int64 `json:"last_unix_nano"`
	// CPU is the CPU time of the receiving process, when it ran alone
	// (the `liveobjects bench udp-receive` command); 0 otherwise.
	CPU time.Duration `json:"cpu_ns"`
}

// OpenRawReceiver opens a UDP socket bound to port (shared with other
// sockets of the host: SO_REUSEADDR) and joined to group at ifc (nil: the
// kernel's choice). With gro the kernel may hand runs of datagrams over
// in one read (UDP_GRO); ReceiveRaw counts them one by one.
func OpenRawReceiver(group netip.Addr, port int, ifc *net.Interface, gro bool) (*net.UDPConn, error) {
	if !group.Is4() || !group.IsMulticast() {
		return nil, errors.New("qsmbench: the raw receiver needs an IPv4 multicast group")
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		})
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	conn := pc.(*net.UDPConn)
	conn.SetReadBuffer(8 << 20)
	if err := ipv4.NewPacketConn(conn).JoinGroup(ifc, &net.UDPAddr{IP: group.AsSlice()}); err != nil {
		conn.Close()
		return nil, err
	}
	if gro && !udpgso.SetGRO(conn) {
		conn.Close()
		return nil, errors.New("qsmbench: the kernel refused UDP_GRO")
	}
	return conn, nil
}

// ReceiveRaw reads datagrams from conn until idle passes without one (once
// the first has come, or after timeout when none comes) or ctx ends.
func ReceiveRaw(ctx context.Context, conn *net.UDPConn, idle, timeout time.Duration) (RawReceipt, error) {
	var r RawReceipt
	buf := make([]byte, 65536)
	oob := make([]byte, udpgso.OOBSize)
	deadline := time.Now().Add(timeout)
	for ctx.Err() == nil {
		wait := time.Now().Add(idle)
		if r.Datagrams == 0 {
			wait = time.Now().Add(time.Second)
			if deadline.Before(wait) {
				wait = deadline
			}
		}
		conn.SetReadDeadline(wait)
		n, oobn, _, _, err := conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return r, err
			}
			if r.Datagrams > 0 || time.Now().After(deadline) {
				return r, nil
			}
			continue
		}
		seg := n
		if g := udpgso.Segment(oob[:oobn]); g > 0 {
			seg = g
		}
		r.Bytes += int64(n)
		r.Datagrams += int64((n + seg - 1) / max(seg, 1))
		r.Last = time.Now().UnixNano()
	}
	return r, ctx.Err()
}
