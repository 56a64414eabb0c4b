package qsm

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// TestBatching checks that small events are packed into datagrams.
func TestBatching(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 2)
	runFanoutPayload(t, cl, 5000, true, 50)
	st := cl.svcs[0].Stats()
	if st.Sent != 5000 || st.DatagramsOut*5 > st.Sent {
		t.Fatalf("sent %d messages in %d datagrams: not packed", st.Sent, st.DatagramsOut)
	}
	t.Logf("%d messages in %d datagrams", st.Sent, st.DatagramsOut)
	// 5,000 messages fit the default window: the sender never waited.
	if st.WindowFullMicros != 0 {
		t.Fatalf("sender held back by its window for %d µs, want 0", st.WindowFullMicros)
	}
}

// TestRateLimit checks that Rate caps a sender's message rate.
func TestRateLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.Rate = 2000
	cl := newCluster(t, cfg, 2)
	start := time.Now()
	runFanoutPayload(t, cl, 1000, true, 100)
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("1000 messages at 2000/s took only %v", d)
	}
}

// blocker is a Handler that holds its first event until released.
type blocker struct {
	*recorder
	release chan struct{}
}

func (b blocker) Deliver(ev transport.Event) {
	<-b.release
	b.recorder.Deliver(ev)
}

// TestSlowConsumer checks flow control end to end: a receiver whose
// handler stops makes its client stop reading, its service refuse data
// (counted), and the sender's window fill; once the handler goes on,
// everything arrives, in order.
func TestSlowConsumer(t *testing.T) {
	old := maxQueue
	maxQueue = 64
	defer func() { maxQueue = old }()
	cfg := testConfig(t)
	cfg.DeliveryQueue = 64 << 10
	cfg.Window = 256
	cl := newCluster(t, cfg, 2)
	ctx := context.Background()
	pub, err := dial(t, cl.svcs[0].Addr()).JoinMember(ctx, "slow", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	b := blocker{recorder: newRecorder(true), release: make(chan struct{})}
	sub, err := dial(t, cl.svcs[1].Addr()).JoinMember(ctx, "slow", b)
	if err != nil {
		t.Fatal(err)
	}
	waitMembers(t, []*Member{pub, sub}, 2)
	const n = 3000
	payload := make([]byte, 1000)
	done := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if err := pub.PublishAsync(ctx, payload); err != nil {
				done <- err
				return
			}
		}
		done <- pub.Flush(ctx)
	}()
	// The sender stalls: its window is full of messages the receiver
	// refuses.
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := cl.svcs[1].Stats(); s.SlowConsumer == 0 {
			return fmt.Errorf("receiver has refused nothing yet")
		}
		if u := cl.svcs[0].Stats().Unstable; u < uint64(cfg.Window) {
			return fmt.Errorf("sender window holds %d of %d", u, cfg.Window)
		}
		return nil
	})
	// Held back for a while, and the stats say for how long.
	time.Sleep(300 * time.Millisecond)
	close(b.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b.waitCount(t, n, 30*time.Second)
	// The receiver's TCP buffers may take some data at first, opening
	// the window for moments: most of the 300ms, not all, is counted.
	if w := time.Duration(cl.svcs[0].Stats().WindowFullMicros) * time.Microsecond; w < 150*time.Millisecond {
		t.Fatalf("sender held back by its window for %v, want most of the 300ms the receiver refused data", w)
	}
	if p := b.problems(); len(p) > 0 {
		t.Fatal(p)
	}
	if got := b.n(); got != n {
		t.Fatalf("delivered %d, want %d", got, n)
	}
}

// TestPublishWaitingForCreditsEnds: a publish waiting for one of its
// client's credits, all of them held by another member's publishes that
// the service cannot place yet, fails as soon as its member leaves, and
// the other member's publishes are left waiting.
func TestPublishWaitingForCreditsEnds(t *testing.T) {
	cfg, svc, peer := heldBackPair(t)
	ctx := context.Background()
	pc := dial(t, peer.Addr())
	c := dial(t, svc.Addr())
	var ms []*Member
	for _, ch := range []string{"a", "b"} {
		if _, err := pc.JoinMember(ctx, ch, newRecorder(false)); err != nil {
			t.Fatal(err)
		}
		m, err := c.JoinMember(ctx, ch, newRecorder(false))
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	waitMembers(t, ms, 2)
	a, b := ms[0], ms[1]
	// The peer holds nothing: a's window fills, and then its publishes
	// wait in the service, holding every credit of the client.
	inEngine(t, peer, func(e *engine) { e.deaf = true })
	aSent := make(chan int, 1)
	go func() {
		n := 0
		for ; n < 100; n++ {
			if a.PublishAsync(ctx, []byte("a")) != nil {
				break
			}
		}
		aSent <- n
	}()
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		var n int
		inEngine(t, svc, func(e *engine) { n = len(e.pending) })
		if n < cfg.ClientCredits {
			return fmt.Errorf("%d publishes wait in the service", n)
		}
		return nil
	})
	bDone := make(chan error, 1)
	go func() { bDone <- b.PublishAsync(ctx, []byte("b")) }()
	select {
	case err := <-bDone:
		t.Fatalf("b's publish returned (%v) while every credit is held", err)
	case <-time.After(100 * time.Millisecond):
	}
	b.Leave()
	select {
	case err := <-bDone:
		if !errors.Is(err, transport.ErrClosed) {
			t.Fatalf("b's publish failed with %v, want transport.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b's publish still waits 5s after b left")
	}
	select {
	case n := <-aSent:
		t.Fatalf("a's publishing ended after %d events, though its publishes are only waiting", n)
	default:
	}
	c.Close()
	if n := <-aSent; n >= 100 {
		t.Fatalf("a published all %d events into a full window", n)
	}
}

// TestPublishAllocations: a stream of publishes of an attached client,
// delivered to a member that borrows its events, allocates nothing per
// event once its buffers are in place: not the frame reader's header, not
// the batches handed from the client's link to the engine, not the
// engine's queue of publishes. A few allocations of the service's
// background work (timers, token rounds) may fall in the measurement.
func TestPublishAllocations(t *testing.T) {
	if per := allocsPerEvent(t, 1); per > 0.2 {
		t.Fatalf("%.2f allocations per publish, want none", per)
	}
}

// TestFanoutAllocations: a stream from one node to another, both with
// attached clients, allocates less than one object per event in steady
// state, counting every node's work: the datagrams queued for sending
// reuse their places, checksums are checked without a scratch slice. (The
// socket library allocates the source address of each datagram read.)
func TestFanoutAllocations(t *testing.T) {
	if per := allocsPerEvent(t, 2); per > 0.5 {
		t.Fatalf("%.2f allocations per event, want fewer than 0.5", per)
	}
}

// allocsPerEvent returns the allocations of the whole process per event
// of a steady stream of 1 KiB events from an attached client of the
// first of nodes services to a member at each of them (the sender's own
// included), counted once the last node has delivered each run of them.
// It skips under the race detector, which allocates on its own.
func allocsPerEvent(t *testing.T, nodes int) float64 {
	t.Helper()
	if raceEnabled {
		t.Skip("the race detector allocates on its own; run without -race to count allocations")
	}
	cl := newCluster(t, testConfig(t), nodes)
	ctx := context.Background()
	const size, n = 1024, 1000
	var bad atomic.Int64
	totals := make([]atomic.Int64, nodes)
	var ms []*Member
	for i, s := range cl.svcs {
		c, err := s.Attach(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		m, err := c.JoinMember(ctx, "allocs", &seqCounter{total: &totals[i], bad: &bad, size: size})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	waitMembers(t, ms, nodes)
	data := patterned(1, size)
	last := &totals[nodes-1]
	stream := func() {
		want := last.Load() + n
		for range n {
			if err := ms[0].PublishAsync(ctx, data); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for last.Load() < want {
			if time.Now().After(deadline) {
				t.Fatalf("delivered %d of %d events in 10s", last.Load()-want+n, n)
			}
			runtime.Gosched()
		}
	}
	for range 3 {
		stream()
	}
	per := testing.AllocsPerRun(20, stream) / n
	if b := bad.Load(); b > 0 {
		t.Fatalf("%d events out of order or of the wrong size", b)
	}
	return per
}
