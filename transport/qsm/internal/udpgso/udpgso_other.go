//go:build !linux

package udpgso

import "net"

// MaxSegments and MaxBytes: one datagram per send where segmentation
// offload is not available.
const (
	MaxSegments = 1
	MaxBytes    = 65507
)

// Available is false: datagrams go one by one.
const Available = false

// SetGRO reports false: datagrams are read one by one.
func SetGRO(conn *net.UDPConn) bool { return false }

// OOBSize is 0: there are no control messages.
var OOBSize = 0

// AppendSegment returns b as it is.
func AppendSegment(b []byte, seg int) []byte { return b }

// Segment returns 0: a buffer holds one datagram.
func Segment(oob []byte) int { return 0 }

// Refused reports false: nothing is offloaded that could be refused.
func Refused(err error) bool { return false }
