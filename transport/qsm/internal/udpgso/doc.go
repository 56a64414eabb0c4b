// Package udpgso wraps the kernel's UDP segmentation offload: a sender
// hands several datagrams of one size to the kernel in one buffer
// (UDP_SEGMENT), which cuts them apart; a receiver reads datagrams of one
// flow that arrived together in one buffer (UDP_GRO), the segment size in
// a control message. Each datagram on the wire stays a datagram of its
// own. Where the platform lacks it, Available is false and every function
// does nothing.
//
// It has no state and starts no goroutines: its functions act on the
// socket or buffers they are given, from any goroutine.
package udpgso
