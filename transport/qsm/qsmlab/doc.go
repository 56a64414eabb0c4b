// Package qsmlab builds a small Ethernet of Linux network namespaces on
// which QSM services run as real processes: one bridge in the caller's
// namespace holding 198.19.X.254/24, and one namespace per node, joined to
// the bridge by a veth pair, at 198.19.X.(i+1). With Options.Wire the
// links act like network cards instead of memory copies: runs of datagrams
// sent in one buffer (UDP_SEGMENT) are cut into datagrams at the sending
// device and coalesced at the receiving one (GRO), as on a real network.
// Loss is injected with nftables where the bridge hands datagrams to a
// node's link (the egress hook of its bridge side), dropping a random
// fraction of the UDP datagrams the node would receive, one by one. Tests and benchmarks of transport/qsm use it; it needs root.
//
// Everything a LAN creates (namespaces, links, nft tables, processes) is
// removed by Close, which is idempotent. A LAN is not safe for concurrent
// configuration; its accessors are.
//
// The package does not import transport/qsm: callers pass the service's
// command line, so internal tests of qsm can use it.
package qsmlab
