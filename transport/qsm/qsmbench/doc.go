// Package qsmbench measures the QSM driver against raw UDP multicast on
// the same network in the same run (with the kernel's segmentation offload
// when QSM's services use it, so that both get the same help): goodput of
// one sender to several receivers, with and without injected loss, with
// one and with thousands of groups over the same nodes, CPU time per
// delivered message and the time to repair a lost message.
//
// RunNetns builds a qsmlab LAN (root only): a service process per
// namespace, the coordinator and the in-process clients in the calling
// process, each client's socket opened inside its node's namespace so that
// client-to-service traffic stays on the node. RunLoopback runs everything
// in process on the loopback adapter, for machines without root.
//
// Concurrency: a run owns every goroutine it starts and stops them before
// it returns; results are plain values.
package qsmbench
