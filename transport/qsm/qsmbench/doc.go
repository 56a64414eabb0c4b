// Package qsmbench measures the QSM driver against raw UDP multicast on
// the same network in the same run (with the kernel's segmentation offload
// when QSM's services use it, so that both get the same help): goodput of
// one sender to several receivers, with and without injected loss, with
// one and with thousands of groups over the same nodes, CPU time per
// delivered message and the time to repair a lost message.
//
// RunNetns builds a qsmlab LAN (root only; with Options.Wire its links
// cut and coalesce runs of datagrams as network cards do): a service
// process per namespace, the coordinator and the in-process clients in the
// calling process, each client's socket opened inside its node's namespace
// so that client-to-service traffic stays on the node. The raw baseline's
// receivers run as processes of their own in the receiving nodes'
// namespaces (`liveobjects bench udp-receive`, which uses OpenRawReceiver
// and ReceiveRaw), as the services do. RunLoopback runs everything in
// process on the loopback adapter, for machines without root.
//
// Measurements are made in rounds (Options.Repeat), each measuring
// everything once; a ratio is the median of the ratios within each round.
// Each round starts the group counts at another place of Options.Groups,
// so that no count always comes first or last.
//
// Concurrency: a run owns every goroutine it starts and stops them before
// it returns; results are plain values.
package qsmbench
