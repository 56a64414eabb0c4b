package qsm

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

func TestLoopbackDelivery(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 3)
	ctx := context.Background()
	var recs []*recorder
	var pubm transport.Member
	for i, s := range cl.svcs {
		c := dial(t, s.Addr())
		r := newRecorder(true)
		m, err := c.Join(ctx, "chat", r)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
		if i == 0 {
			pubm = m
		}
	}
	// Wait until every service sees all three nodes in the group.
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		v := cl.coord.View()
		if len(v.Regions) != 1 || len(v.Regions[0].Members) != 3 {
			return fmt.Errorf("view %d: %d regions", v.Number, len(v.Regions))
		}
		for _, s := range cl.svcs {
			if s.Stats().View < v.Number {
				return fmt.Errorf("service behind")
			}
		}
		return nil
	})
	const n = 2000
	for i := 0; i < n; i++ {
		seq, err := pubm.Publish(ctx, []byte(fmt.Sprintf("msg %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i+1) {
			t.Fatalf("publish %d got seq %d", i, seq)
		}
	}
	for i, r := range recs {
		r.waitCount(t, n, 10*time.Second)
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("receiver %d: %v", i, p)
		}
		r.mu.Lock()
		for j, ev := range r.events {
			if want := fmt.Sprintf("msg %d", j); string(ev.Data) != want {
				t.Fatalf("receiver %d event %d = %q, want %q", i, j, ev.Data, want)
			}
		}
		r.mu.Unlock()
	}
}
