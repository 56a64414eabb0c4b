package qsm

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/internal/payload"
)

// BenchmarkDeliver measures what a receiving node spends per event from
// the in-order receipt of a message to the return of its handler: the
// duplicate check, the group's local members, the hand-over to the
// attached client and its dispatch worker, and the handler call. That is
// the part of the receive path whose cost may grow with the number of
// groups; sockets, parsing and repair are left out, so that the figure
// moves little from run to run.
//
// Each sub-benchmark compares events spread round-robin over its groups
// with events of one group, on two nodes set up alike, in alternating
// chunks of the same run, and reports both CPU times per event (of the
// whole process: the engine and the client's workers) and their ratio
// (x1group; QSM's claim is close to 1):
//
//	go test ./transport/qsm -run '^$' -bench Deliver -count 5
func BenchmarkDeliver(b *testing.B) {
	benchGroups(b, newDeliverBench)
}

// chunker is one side of a comparison of BenchmarkDeliver or
// BenchmarkPublish: chunk handles deliverChunk events and returns the CPU
// time the process spent on them.
type chunker interface {
	chunk(b *testing.B) time.Duration
}

// benchGroups runs, for 1,000 and for 8,000 groups, chunks of a node set
// up by setup over that many groups alternated with chunks of one set up
// over one group, and reports both CPU times per event and their ratio
// (x1group).
func benchGroups[T chunker](b *testing.B, setup func(b *testing.B, groups int) T) {
	if processCPU() == 0 {
		b.Skip("this system does not tell the process's CPU time")
	}
	for _, groups := range []int{1000, 8000} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			one := setup(b, 1)
			many := setup(b, groups)
			var cOne, cMany time.Duration
			b.ResetTimer()
			for range b.N {
				cOne += one.chunk(b)
				cMany += many.chunk(b)
			}
			n := float64(b.N * deliverChunk)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(cOne.Nanoseconds())/n, "cpu-ns/event-1group")
			b.ReportMetric(float64(cMany.Nanoseconds())/n, "cpu-ns/event")
			b.ReportMetric(float64(cMany)/float64(cOne), "x1group")
		})
	}
}

// joinAttached attaches a client to svc and joins it to groups channels
// named prefix00000, prefix00001, ..., 256 joins at a time, with a
// handler of its own for each (made by h, with its own state, as
// applications have); it returns once every member is in its view.
func joinAttached(b *testing.B, svc *Service, prefix string, groups int, h func() transport.Handler) []*Member {
	b.Helper()
	c, err := svc.Attach(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	ms := make([]*Member, groups)
	errs := make(chan error, groups)
	sem := make(chan struct{}, 256)
	for g := range groups {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			m, err := c.JoinMember(context.Background(), fmt.Sprintf("%s%05d", prefix, g), h())
			ms[g] = m
			errs <- err
		}()
	}
	for range groups {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	waitMembers(b, ms, 1)
	return ms
}

// deliverChunk is the number of events of one timed chunk, and
// deliverBatch the number the engine handles between two hand-overs to
// the client (about what one read of the socket brings).
const (
	deliverChunk = 8192
	deliverBatch = 64
)

// deliverBench is one node with an attached client whose members, one
// per group, count what they are given.
type deliverBench struct {
	svc     *Service
	groups  []uint64
	rs      *recvStream
	seq     uint64
	total   atomic.Int64
	bad     atomic.Int64
	payload []byte
	blocks  payload.Recycler
}

func newDeliverBench(b *testing.B, groups int) *deliverBench {
	b.Helper()
	cl := newCluster(b, testConfig(b), 1)
	d := &deliverBench{svc: cl.svcs[0], payload: patterned(1, 1024)}
	ms := joinAttached(b, d.svc, "deliver", groups, func() transport.Handler { return &seqCounter{total: &d.total, bad: &d.bad, size: len(d.payload)} })
	for _, m := range ms {
		d.groups = append(d.groups, GroupID(m.Channel()))
	}
	// A stream of a sender that is not in the view: deliverNext does not
	// look at the view, and the node's own streams are left alone.
	d.rs = &recvStream{sender: 0xde11e, streamEpoch: 1, started: true, next: 1, keptBase: 1, pending: pendingRing{base: 1}}
	d.seq = 1
	// Warm up: every group's first events set up its delivery position.
	for range max(2, 2*groups/deliverChunk+1) {
		d.chunk(b)
	}
	return d
}

// chunk delivers deliverChunk events round-robin over the groups and
// returns the CPU time the process spent until every handler call had
// returned.
func (d *deliverBench) chunk(b *testing.B) time.Duration {
	want := d.total.Load() + deliverChunk
	start := processCPU()
	ok := d.svc.inEngine(func(e *engine) {
		n := uint64(len(d.groups))
		for k := 0; k < deliverChunk; k++ {
			i := (d.seq - 1) % n
			m := &message{Seq: d.seq, Group: d.groups[i], Source: uint32(i) + 1, GSeq: (d.seq-1)/n + 1}
			m.Data, m.blk = d.blocks.Copy(d.payload)
			d.seq++
			e.deliverNext(d.rs, m)
			if k%deliverBatch == deliverBatch-1 {
				for _, l := range e.direct {
					l.flush()
				}
			}
		}
		for _, l := range e.direct {
			l.flush()
		}
	})
	if !ok {
		b.Fatal("engine gone")
	}
	deadline := time.Now().Add(10 * time.Second)
	for d.total.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d events in 10s", d.total.Load(), want)
		}
		time.Sleep(50 * time.Microsecond)
	}
	took := processCPU() - start
	if n := d.bad.Load(); n > 0 {
		b.Fatalf("%d events out of order or not of %d bytes", n, len(d.payload))
	}
	return took
}

// seqCounter counts a member's events and checks their order and size
// (one sender's events, numbered 1, 2, 3...); it borrows their payloads,
// as the QSM benchmark's handlers do.
type seqCounter struct {
	total, bad *atomic.Int64 // events, and events out of order or of another size
	size       int
	seq        uint64
}

func (h *seqCounter) Deliver(ev transport.Event) {
	if len(ev.Data) != h.size || ev.Seq != h.seq+1 {
		h.bad.Add(1)
	}
	h.seq = ev.Seq
	h.total.Add(1)
}

func (*seqCounter) Checkpoint() ([]byte, error)      { return nil, nil }
func (*seqCounter) Restore(_ []byte, _ uint64) error { return nil }
func (*seqCounter) BorrowsData()                     {}
