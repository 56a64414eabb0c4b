package qsm

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// runRegionChurn streams n events from one sender into channel "A" to
// three receivers while the first receiver joins and leaves other channels
// (each change moves its node to another region), the second receiver
// joins and leaves "B" now and then, and a fifth node that is not in "A"
// joins and leaves "B" too. Every receiver must deliver every event exactly
// once, in order.
func runRegionChurn(t *testing.T, dropRate float64, n, rounds int) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 1)
	rcv := cfg
	rcv.DropRate = dropRate
	for i := 0; i < 4; i++ {
		cl.addService(rcv)
	}
	ctx := context.Background()
	var pub *Member
	var recs []*recorder
	for i, s := range cl.svcs[:4] {
		c := dial(t, s.Addr())
		r := newRecorder(true)
		m, err := c.JoinMember(ctx, "A", r)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			pub = m
		} else {
			recs = append(recs, r)
		}
	}
	waitGroupView(t, cl, "A", 4)

	var sent atomic.Int64
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		pctx, cancel := context.WithTimeout(ctx, 120*time.Second)
		defer cancel()
		for i := 1; i <= n; i++ {
			if err := pub.PublishAsync(pctx, []byte(strconv.Itoa(i))); err != nil {
				done <- err
				return
			}
			sent.Add(1)
			if i%25 == 0 {
				time.Sleep(time.Millisecond) // keep the stream going across the changes
			}
		}
		done <- pub.Flush(pctx)
	}()

	// The churn: other processes on the receivers' nodes (and on a node
	// outside "A") open and close channels while the stream runs.
	churnR1 := dial(t, cl.svcs[1].Addr())
	churnR2 := dial(t, cl.svcs[2].Addr())
	churnX := dial(t, cl.svcs[4].Addr())
	other := newRecorder(false)
	changes, during := 0, 0
	changed := func() {
		changes++
		if sent.Load() < int64(n) {
			during++
		}
	}
	for round := 0; sent.Load() < int64(n) && round < rounds; round++ {
		before := sent.Load()
		var joined []*Member
		join := func(c *Client, ch string) {
			m, err := c.JoinMember(ctx, ch, other)
			if err != nil {
				t.Fatalf("round %d: join %s: %v", round, ch, err)
			}
			joined = append(joined, m)
			changed()
		}
		join(churnR1, fmt.Sprintf("B%d", round%2))
		if round%3 == 0 {
			join(churnX, "B0")
		}
		if round%2 == 1 {
			join(churnR2, "B1") // R2 moves into R1's region
		}
		join(churnR1, fmt.Sprintf("C%d", round))
		for i, m := range joined {
			if err := m.Leave(); err != nil {
				t.Fatal(err)
			}
			changed()
			if round%4 == 2 && i < len(joined)-1 {
				continue // leave back to back: several nodes move in one view
			}
			// Let the stream run a little between the moves.
			for wait := time.Now().Add(5 * time.Second); ; {
				if s := sent.Load(); s >= before+100 || s >= int64(n) {
					break
				}
				if time.Now().After(wait) {
					dumpEngines(t, cl)
					t.Fatalf("round %d: stream stalled at %d", round, sent.Load())
				}
				time.Sleep(time.Millisecond)
			}
			before = sent.Load()
		}
	}
	if err := <-done; err != nil {
		dumpEngines(t, cl)
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, r := range recs {
		for r.n() < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	for i, r := range recs {
		if p := r.problems(); len(p) > 0 {
			t.Errorf("receiver %d out of order: %v", i+1, p)
		}
		r.mu.Lock()
		got := len(r.events)
		var bad string
		for j, ev := range r.events {
			if string(ev.Data) != strconv.Itoa(j+1) {
				bad = fmt.Sprintf("event %d is %q", j+1, ev.Data)
				break
			}
		}
		r.mu.Unlock()
		if got != n || bad != "" {
			if !t.Failed() {
				dumpEngines(t, cl)
			}
			t.Errorf("receiver %d delivered %d events, want %d exactly once in order; %s", i+1, got, n, bad)
		}
	}
	var moves, drops uint64
	for _, s := range cl.svcs {
		st := s.Stats()
		drops += st.InjectedDrops
		moves += st.Handovers
	}
	t.Logf("%d events, %d channel changes (%d during the stream), %d messages handed over, %d injected drops, in %v",
		n, changes, during, moves, drops, time.Since(start).Round(time.Millisecond))
	if during < 8 {
		t.Fatalf("only %d channel changes during the stream; make it longer", during)
	}
	waitNothingKept(t, cl)
}

// TestRegionChangeKeepsStream checks that events on a channel a node keeps
// are neither lost nor duplicated when the node changes its set of
// channels (and so its region) while a stream runs.
func TestRegionChangeKeepsStream(t *testing.T) {
	runRegionChurn(t, 0, 20000, 12)
}

// TestRegionChangeKeepsStreamLossy is TestRegionChangeKeepsStream with 5%
// of the receivers' datagrams dropped.
func TestRegionChangeKeepsStreamLossy(t *testing.T) {
	runRegionChurn(t, 0.05, 20000, 12)
}

// TestRegionChangeSoak runs the churn for longer, with 10% loss.
func TestRegionChangeSoak(t *testing.T) {
	if os.Getenv("LIVEOBJECTS_LONG") == "" {
		t.Skip("long test; set LIVEOBJECTS_LONG=1")
	}
	runRegionChurn(t, 0.10, 200000, 150)
}

// TestRegionChangeLateStart checks a node that changes region keeping its
// channel and gets no datagram of the view that moved it: the first one it
// gets is of a later epoch of the sender's stream (other nodes entered and
// left the region meanwhile). It must still start where its own epoch
// began and deliver every event once, in order.
func TestRegionChangeLateStart(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 5)
	ctx := context.Background()
	var pub *Member
	var mover *recorder
	for i, s := range cl.svcs[:3] {
		c := dial(t, s.Addr())
		r := newRecorder(true)
		m, err := c.JoinMember(ctx, "A", r)
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 0:
			pub = m
		case 1:
			mover = r
		}
	}
	waitGroupView(t, cl, "A", 3)
	// A fourth node is in region {A,B} from the start, so that the
	// sender's stream into it is older than the mover's entry.
	c3 := dial(t, cl.svcs[3].Addr())
	other := newRecorder(false)
	if _, err := c3.JoinMember(ctx, "A", other); err != nil {
		t.Fatal(err)
	}
	b3, err := c3.JoinMember(ctx, "B", other)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6000
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for i := 1; i <= n; i++ {
			if err := pub.PublishAsync(pctx, []byte(strconv.Itoa(i))); err != nil {
				done <- err
				return
			}
			sent.Add(1)
			if i%25 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		done <- pub.Flush(pctx)
	}()
	waitSent := func(k int64) {
		t.Helper()
		checkFor(t, 10*time.Second, time.Millisecond, func() error {
			if s := sent.Load(); s < k {
				return fmt.Errorf("only %d sent", s)
			}
			return nil
		})
	}
	setDeaf := func(s *Service, on bool) {
		if !s.inEngine(func(e *engine) { e.deaf = on }) {
			t.Fatal("engine gone")
		}
	}
	waitSent(1000)
	// The mover hears nothing while it joins B (entering region {A,B} in
	// view v), while the fourth node leaves B (the region's next epoch)
	// and a fifth node enters {A,B} (the one after): its first datagram
	// of {A,B} is of a later epoch, and the fifth node's start point is
	// above seqs the mover lacks.
	setDeaf(cl.svcs[1], true)
	mb, err := dial(t, cl.svcs[1].Addr()).JoinMember(ctx, "B", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	from := sent.Load()
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		if s := sent.Load(); s < from+300 && s < n {
			return fmt.Errorf("stream stalled at %d", s)
		}
		return nil
	})
	if err := b3.Leave(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		if s := sent.Load(); s < from+600 && s < n {
			return fmt.Errorf("stream stalled at %d", s)
		}
		return nil
	})
	c4 := dial(t, cl.svcs[4].Addr())
	if _, err := c4.JoinMember(ctx, "A", other); err != nil {
		t.Fatal(err)
	}
	if _, err := c4.JoinMember(ctx, "B", other); err != nil {
		t.Fatal(err)
	}
	setDeaf(cl.svcs[1], false)
	if err := <-done; err != nil {
		dumpEngines(t, cl)
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for mover.n() < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	mover.mu.Lock()
	got := len(mover.events)
	bad := ""
	for j, ev := range mover.events {
		if string(ev.Data) != strconv.Itoa(j+1) {
			bad = fmt.Sprintf("event %d is %q", j+1, ev.Data)
			break
		}
	}
	mover.mu.Unlock()
	if got != n || bad != "" {
		dumpEngines(t, cl)
		t.Fatalf("mover delivered %d events, want %d exactly once in order; %s", got, n, bad)
	}
	if err := mb.Leave(); err != nil {
		t.Fatal(err)
	}
}
