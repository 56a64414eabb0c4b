package qsm

import (
	"net"
	"testing"

	"golang.org/x/net/ipv4"

	"github.com/liveobjects/liveobjects/transport/qsm/internal/udpgso"
)

// TestCoalesce checks how a batch is cut into segmentation offload runs:
// datagrams of one size to one address, a shorter one closing a run, at
// most udpgso.MaxSegments and udpgso.MaxBytes each.
func TestCoalesce(t *testing.T) {
	if !udpgso.Available {
		t.Skip("no segmentation offload here")
	}
	a := &net.UDPAddr{IP: net.IPv4(239, 1, 2, 3), Port: 9}
	a2 := &net.UDPAddr{IP: net.IPv4(239, 1, 2, 3), Port: 9} // equal, another pointer
	b := &net.UDPAddr{IP: net.IPv4(239, 1, 2, 4), Port: 9}
	dg := func(n int, to net.Addr) ipv4.Message {
		return ipv4.Message{Buffers: [][]byte{make([]byte, n)}, Addr: to}
	}
	var msgs []ipv4.Message
	msgs = append(msgs, dg(100, a), dg(100, a2), dg(60, a), dg(100, a)) // run of 3 closed by the short one, then 1
	msgs = append(msgs, dg(100, b), dg(100, b), dg(50, b))              // another address, closed by a short one
	msgs = append(msgs, dg(100, b))                                     // so this one starts a new run
	for i := 0; i < udpgso.MaxSegments+3; i++ {
		msgs = append(msgs, dg(10, a))
	}
	s := &Service{}
	out, firsts := s.coalesce(msgs)
	want := []struct{ first, n int }{{0, 3}, {3, 1}, {4, 3}, {7, 1}, {8, udpgso.MaxSegments}, {8 + udpgso.MaxSegments, 3}}
	if len(out) != len(want) {
		t.Fatalf("%d runs, want %d", len(out), len(want))
	}
	for k, w := range want {
		if firsts[k] != w.first || len(out[k].Buffers) != w.n {
			t.Errorf("run %d: first %d, %d datagrams; want %d, %d", k, firsts[k], len(out[k].Buffers), w.first, w.n)
		}
		if (w.n > 1) != (len(out[k].OOB) > 0) {
			t.Errorf("run %d: control message %v for %d datagrams", k, out[k].OOB, w.n)
		}
		if w.n > 1 && udpgso.Segment(out[k].OOB) != 0 {
			t.Errorf("run %d: a UDP_SEGMENT message read as UDP_GRO", k)
		}
	}
	big := []ipv4.Message{}
	for i := 0; i < 60; i++ {
		big = append(big, dg(1472, a))
	}
	out, _ = s.coalesce(big)
	for _, m := range out {
		total := 0
		for _, p := range m.Buffers {
			total += len(p)
		}
		if total > udpgso.MaxBytes {
			t.Errorf("run of %d bytes over %d", total, udpgso.MaxBytes)
		}
	}
	if len(out) != 2 || len(out[0].Buffers) != udpgso.MaxBytes/1472 {
		t.Errorf("60 datagrams of 1472 bytes: %d runs, first of %d", len(out), len(out[0].Buffers))
	}
}
