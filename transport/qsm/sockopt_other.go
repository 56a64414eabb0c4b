//go:build !linux

package qsm

import (
	"net"
	"syscall"
)

// listenControl does nothing where SO_REUSEADDR is not set this way; only
// one service per host can then use the multicast port.
func listenControl(network, address string, c syscall.RawConn) error { return nil }

// setMulticastAll is a no-op: datagrams are filtered by region id anyway.
func setMulticastAll(conn *net.UDPConn, on bool) error { return nil }

// setBuffers asks for large socket buffers.
func setBuffers(conn *net.UDPConn, n int) {
	conn.SetReadBuffer(n)
	conn.SetWriteBuffer(n)
}

// localUplinkName returns "": local uplink sockets are Linux only.
func localUplinkName(uplinkAddr string) string { return "" }
