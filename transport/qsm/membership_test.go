package qsm

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func TestFailureDetection(t *testing.T) {
	cfg := testConfig(t)
	cfg.Window = 512
	cl := newCluster(t, cfg, 4)
	ctx := context.Background()
	var members []*Member
	var recs []*recorder
	for _, s := range cl.svcs {
		c := dial(t, s.Addr())
		r := newRecorder(false)
		m, err := c.JoinMember(ctx, "fd", r)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, m)
		recs = append(recs, r)
	}
	waitGroupView(t, cl, "fd", 4)
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 20000; i++ {
			if err := members[0].PublishAsync(ctx, []byte("x")); err != nil {
				done <- err
				return
			}
			sent.Add(1)
		}
		done <- members[0].Flush(ctx)
	}()
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		if sent.Load() < 2000 {
			return fmt.Errorf("only %d sent", sent.Load())
		}
		return nil
	})
	victim := cl.svcs[3]
	frozeAt := time.Now()
	victim.freeze()
	limit := cfg.FailureTimeout() + 2*cfg.HeartbeatInterval
	checkFor(t, limit+5*time.Second, 5*time.Millisecond, func() error {
		if cl.coord.View().node(victim.NodeID()) != nil {
			return fmt.Errorf("victim still in the view")
		}
		return nil
	})
	took := time.Since(frozeAt)
	t.Logf("frozen node left the view after %v (interval x missed = %v)", took.Round(time.Millisecond), cfg.FailureTimeout())
	if took > limit {
		t.Fatalf("failure detected after %v, want within %v", took, limit)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		recs[i].waitCount(t, 20000, 20*time.Second)
		if p := recs[i].problems(); len(p) > 0 {
			t.Fatalf("receiver %d: %v", i, p)
		}
	}
	// Every member learns of it, and the sender's buffers drain.
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		for i := 0; i < 3; i++ {
			v := members[i].View()
			if len(v.Members) != 3 || slices.Contains(v.Members, "node3") {
				return fmt.Errorf("member %d view %d: %v", i, v.Number, v.Members)
			}
		}
		if u := cl.svcs[0].Stats().Unstable; u != 0 {
			return fmt.Errorf("%d messages unstable at the sender", u)
		}
		return nil
	})
}

func TestJoinMidStream(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 3)
	ctx := context.Background()
	var recs []*recorder
	var pub *Member
	for i, s := range cl.svcs[:2] {
		c := dial(t, s.Addr())
		r := newRecorder(true)
		m, err := c.JoinMember(ctx, "late", r)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			pub = m
		}
		recs = append(recs, r)
	}
	waitGroupView(t, cl, "late", 2)
	const n = 20000
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if err := pub.PublishAsync(ctx, []byte(fmt.Sprint(i+1))); err != nil {
				done <- err
				return
			}
			sent.Add(1)
			if i%100 == 0 {
				time.Sleep(time.Millisecond) // keep the stream going while the node joins
			}
		}
		done <- pub.Flush(ctx)
	}()
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		if sent.Load() < 1000 {
			return fmt.Errorf("only %d sent", sent.Load())
		}
		return nil
	})
	late := newRecorder(true)
	c := dial(t, cl.svcs[2].Addr())
	before := sent.Load()
	if _, err := c.JoinMember(ctx, "late", late); err != nil {
		t.Fatal(err)
	}
	after := sent.Load()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if after >= n {
		t.Fatalf("stream ended before the join completed; make it longer")
	}
	recs[1].waitCount(t, n, 20*time.Second)
	checkFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		late.mu.Lock()
		defer late.mu.Unlock()
		if len(late.events) == 0 || late.events[len(late.events)-1].Seq != n {
			return fmt.Errorf("late joiner has %d events", len(late.events))
		}
		return nil
	})
	late.mu.Lock()
	first := late.events[0].Seq
	got := len(late.events)
	late.mu.Unlock()
	if p := late.problems(); len(p) > 0 {
		t.Fatalf("late joiner: %v", p)
	}
	if got != int(n-first+1) {
		t.Fatalf("late joiner delivered %d events from seq %d, want %d", got, first, n-first+1)
	}
	// It starts no earlier than what was published before it asked to
	// join, and no later than what was published when the join returned
	// (plus what was in flight in the client).
	if first <= 1 || first > uint64(after)+uint64(cfg.ClientCredits)+1 {
		t.Fatalf("late joiner starts at %d; join began after %d and returned after %d events", first, before, after)
	}
	t.Logf("joined after %d..%d events, first delivered %d, got all %d after it", before, after, first, got)
	waitNothingKept(t, cl)
}

func TestThousandGroups(t *testing.T) {
	cfg := testConfig(t)
	cfg.DropRate = 0.02
	cl := newCluster(t, cfg, 3)
	ctx := context.Background()
	const groups = 1000
	var recs []*recorder
	var pubs []*Member
	for i, s := range cl.svcs {
		c := dial(t, s.Addr())
		r := newRecorder(false)
		recs = append(recs, r)
		ms, err := joinMany(ctx, c, "g", groups, r)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			pubs = ms
		}
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		v := cl.coord.View()
		if len(v.Regions) != 1 || len(v.Regions[0].Members) != 3 || len(v.Regions[0].Groups) != groups {
			return fmt.Errorf("view %d: %d regions", v.Number, len(v.Regions))
		}
		for _, s := range cl.svcs {
			if s.Stats().View < v.Number {
				return fmt.Errorf("service behind")
			}
		}
		return nil
	})
	const per = 5
	for k := 0; k < per; k++ {
		for _, m := range pubs {
			if err := m.PublishAsync(ctx, []byte("event")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, m := range pubs {
		if err := m.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range recs {
		r.waitCount(t, groups*per, 30*time.Second)
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("receiver %d: %v", i, p)
		}
	}
	waitNothingKept(t, cl)
}

// TestCoordinatorRestart checks that services find a restarted coordinator
// (which numbers views afresh) and that joins and delivery work again.
func TestCoordinatorRestart(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 2)
	cl.restartCoordinator()
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := len(cl.coord.View().Nodes); n != 2 {
			return fmt.Errorf("%d services back", n)
		}
		return nil
	})
	ctx := context.Background()
	var ms []*Member
	var recs []*recorder
	for _, s := range cl.svcs {
		r := newRecorder(false)
		m, err := dial(t, s.Addr()).JoinMember(ctx, "again", r)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
		recs = append(recs, r)
	}
	waitMembers(t, ms, 2)
	for i := 0; i < 100; i++ {
		if _, err := ms[0].Publish(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	recs[1].waitCount(t, 100, 10*time.Second)
}

// countHandler counts the records logged through it.
type countHandler struct{ n atomic.Int64 }

func (h *countHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (h *countHandler) Handle(context.Context, slog.Record) error { h.n.Add(1); return nil }
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler        { return h }
func (h *countHandler) WithGroup(string) slog.Handler             { return h }

// TestBroadcastDropsOnce checks that a service link the coordinator cannot
// write to is closed and reported once, not at every later view, while the
// other links go on receiving.
func TestBroadcastDropsOnce(t *testing.T) {
	c, err := NewCoordinator(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	var h countHandler
	c.log = slog.New(&h)
	deadA, deadB := net.Pipe()
	deadB.Close()
	liveA, liveB := net.Pipe()
	defer liveA.Close()
	defer liveB.Close()
	dead := &gmsNode{info: NodeInfo{Name: "dead"}, conn: deadA, w: bufio.NewWriter(deadA)}
	live := &gmsNode{info: NodeInfo{Name: "live"}, conn: liveA, w: bufio.NewWriter(liveA)}
	got := make(chan int, 8)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := liveB.Read(buf)
			if err != nil {
				return
			}
			got <- n
		}
	}()
	for range 3 {
		c.broadcast([]*gmsNode{dead, live}, []byte("frame"))
		select {
		case n := <-got:
			if n != len("frame") {
				t.Fatalf("live link read %d bytes, want %d", n, len("frame"))
			}
		case <-time.After(5 * time.Second):
			t.Fatal("live link got nothing")
		}
	}
	if n := h.n.Load(); n != 1 {
		t.Errorf("the dead link was reported %d times, want once", n)
	}
	if _, err := deadA.Write([]byte("x")); err == nil {
		t.Error("the dead link was not closed")
	}
}
