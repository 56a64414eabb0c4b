package qsm

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// BenchmarkPublish measures what a sending node spends per event, from a
// member's PublishAsync to the answer that completes it, with the
// node's own delivery of the event to its member on the way: the
// client's side of a publish, the hand-over to the service, the engine's
// publish, its answer, and the dispatch of the node's own copy. The
// sender's engine is the one goroutine every event of the node passes
// through, so per-group state it touches is paid at the rate of the
// whole stream. The node is alone, so nothing is multicast: sockets are
// left out, as in BenchmarkDeliver.
//
// Each sub-benchmark compares events published round-robin over its
// groups with events of one group, on two nodes set up alike, in
// alternating chunks of the same run, and reports both CPU times per
// event (of the whole process) and their ratio (x1group):
//
//	go test ./transport/qsm -run '^$' -bench Publish -count 5
func BenchmarkPublish(b *testing.B) {
	benchGroups(b, newPublishBench)
}

// publishBench is one node with an attached client whose members, one
// per group, publish and count their own events.
type publishBench struct {
	ms      []*Member
	k       int
	total   atomic.Int64
	bad     atomic.Int64
	payload []byte
}

func newPublishBench(b *testing.B, groups int) *publishBench {
	b.Helper()
	cl := newCluster(b, testConfig(b), 1)
	p := &publishBench{payload: patterned(1, 1024)}
	p.ms = joinAttached(b, cl.svcs[0], "publish", groups, p.counter)
	// Warm up: every member's first publishes set up its state.
	for range max(2, 2*groups/deliverChunk+1) {
		p.chunk(b)
	}
	return p
}

// chunk publishes deliverChunk events round-robin over the members and
// returns the CPU time the process spent until every one was answered
// and delivered.
func (p *publishBench) chunk(b *testing.B) time.Duration {
	want := p.total.Load() + deliverChunk
	ctx := context.Background()
	start := processCPU()
	for range deliverChunk {
		if err := p.ms[p.k%len(p.ms)].PublishAsync(ctx, p.payload); err != nil {
			b.Fatal(err)
		}
		p.k++
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.total.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d events in 10s", p.total.Load()-want+deliverChunk, deliverChunk)
		}
		time.Sleep(50 * time.Microsecond)
	}
	// Every publish answered: the client's credits are all free again.
	// (Flushing the members instead would add a pass over them that
	// costs thousands of groups more than one.)
	sem := p.ms[0].c.sem
	for len(sem) > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%d publishes unanswered after 10s", len(sem))
		}
		time.Sleep(50 * time.Microsecond)
	}
	took := processCPU() - start
	if n := p.bad.Load(); n > 0 {
		b.Fatalf("%d events out of order or not of %d bytes", n, len(p.payload))
	}
	return took
}

// counter returns a handler that counts a member's events into p.
func (p *publishBench) counter() transport.Handler {
	return &seqCounter{total: &p.total, bad: &p.bad, size: len(p.payload)}
}
