package qsm

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestGroupSetAfter: merging a frame's adds and removals into a node's
// sorted set gives what a set built afresh gives, whatever the overlaps
// and repeats.
func TestGroupSetAfter(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	name := func() string { return fmt.Sprint("g", rng.IntN(60)) }
	set := map[uint64]bool{}
	var sorted []uint64
	for round := 0; round < 2000; round++ {
		var adds, rems []string
		for range rng.IntN(6) {
			adds = append(adds, name())
		}
		for range rng.IntN(6) {
			rems = append(rems, name())
		}
		for _, g := range adds {
			set[GroupID(g)] = true
		}
		for _, g := range rems {
			delete(set, GroupID(g))
		}
		sorted = groupSetAfter(sorted, adds, rems)
		if want := slices.Sorted(maps.Keys(set)); !slices.Equal(sorted, want) {
			t.Fatalf("round %d: adds %v, rems %v: got %v, want %v", round, adds, rems, sorted, want)
		}
	}
}

// TestGroupChurn: a client joins thousands of groups at once, then leaves
// half of them while it joins others and leaves and joins some again at
// once; the coordinator ends up with exactly the groups the client is in,
// and the node's region lists exactly them.
func TestGroupChurn(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 1)
	ctx := context.Background()
	c := attach(t, cl.svcs[0])
	var mu sync.Mutex
	members := map[string]*Member{}
	// in runs f for each name, 128 at a time.
	in := func(names []string, f func(name string) error) {
		t.Helper()
		sem := make(chan struct{}, 128)
		errs := make(chan error, len(names))
		var wg sync.WaitGroup
		for _, n := range names {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				errs <- f(n)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	join := func(name string) error {
		m, err := c.JoinMember(ctx, name, newRecorder(false))
		if err != nil {
			return fmt.Errorf("join %s: %w", name, err)
		}
		mu.Lock()
		members[name] = m
		mu.Unlock()
		return nil
	}
	leave := func(name string) error {
		mu.Lock()
		m := members[name]
		delete(members, name)
		mu.Unlock()
		return m.Leave()
	}
	first := groupNames("g", 3000)
	in(first, join)
	var odd, even []string
	for i, n := range first {
		if i%2 == 0 {
			even = append(even, n)
		} else {
			odd = append(odd, n)
		}
	}
	// Leave the even ones and join new ones at once; leave and join again
	// a hundred of the odd ones.
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); in(even, leave) }()
	go func() { defer wg.Done(); in(groupNames("h", 1000), join) }()
	go func() {
		defer wg.Done()
		in(odd[:100], func(n string) error {
			if err := leave(n); err != nil {
				return err
			}
			return join(n)
		})
	}()
	wg.Wait()
	mu.Lock()
	want := slices.Sorted(maps.Keys(members))
	mu.Unlock()
	if len(want) != 1500+1000 {
		t.Fatalf("the client holds %d members, want 2500", len(want))
	}
	wantIDs := make([]uint64, len(want))
	for i, n := range want {
		wantIDs[i] = GroupID(n)
	}
	slices.Sort(wantIDs)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		chans := cl.coord.Channels()
		var got []string
		for _, ch := range chans {
			if ch.Members != 1 {
				return fmt.Errorf("%s has %d nodes, want 1", ch.Name, ch.Members)
			}
			got = append(got, ch.Name)
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("the coordinator lists %d channels, want %d", len(got), len(want))
		}
		v := cl.coord.View()
		if len(v.Regions) != 1 || !slices.Equal(v.Regions[0].Groups, wantIDs) {
			return fmt.Errorf("view %d: %d regions; want one of the client's %d groups", v.Number, len(v.Regions), len(wantIDs))
		}
		return nil
	})
}

// BenchmarkJoinGroups: five services on loopback, a client attached to
// each; every client joins 8,000 groups (256 joins in flight) and, once
// all have, leaves them. Reports the time for all five to join.
func BenchmarkJoinGroups(b *testing.B) {
	const nodes, groups = 5, 8000
	cl := newCluster(b, testConfig(b), nodes)
	ctx := context.Background()
	var cs []*Client
	for _, s := range cl.svcs {
		cs = append(cs, attach(b, s))
	}
	names := groupNames("j", groups)
	var joinTime time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		all := make([][]*Member, nodes)
		var wg sync.WaitGroup
		for k, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ms := make([]*Member, groups)
				sem := make(chan struct{}, 256)
				var inner sync.WaitGroup
				for g, n := range names {
					inner.Add(1)
					sem <- struct{}{}
					go func() {
						defer inner.Done()
						defer func() { <-sem }()
						m, err := c.JoinMember(ctx, n, newRecorder(false))
						if err != nil {
							b.Error(err)
							return
						}
						ms[g] = m
					}()
				}
				inner.Wait()
				all[k] = ms
			}()
		}
		wg.Wait()
		joinTime += time.Since(start)
		b.StopTimer()
		for _, ms := range all {
			for _, m := range ms {
				if m != nil {
					m.Leave()
				}
			}
		}
		checkFor(b, 30*time.Second, 20*time.Millisecond, func() error {
			if n := len(cl.coord.View().Regions); n != 0 {
				return fmt.Errorf("%d regions left", n)
			}
			return nil
		})
		b.StartTimer()
	}
	b.ReportMetric(joinTime.Seconds()/float64(b.N), "s/join-all")
}
