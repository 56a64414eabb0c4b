package qsm

import (
	"net"
	"net/netip"
	"syscall"

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

// localUplinkName returns the name of the local socket of the service
// whose uplink listens on uplinkAddr, an IP address and port: an abstract
// Unix socket (the leading '@'), which exists only while the service
// holds it open and is seen only within its network namespace. It
// returns "" for an address that is not IP:port, since a host name could
// name another machine's service.
func localUplinkName(uplinkAddr string) string {
	ap, err := netip.ParseAddrPort(uplinkAddr)
	if err != nil {
		return ""
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return "@liveobjects-qsm-uplink/" + ap.String()
}
