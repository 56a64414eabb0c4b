package micro

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestPaperScenario is the paper's section 3 in one process: Alice creates
// M, Bob and Clare copy it, all three flood it; news items reach everyone
// and every server learns the others.
func TestPaperScenario(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	alice, bob, clare := startServer(t, nil), startServer(t, nil), startServer(t, nil)
	la, lb, lc := newLib(t, alice, keys), newLib(t, bob, keys), newLib(t, clare, keys)
	m, err := la.CreateNew(ctx, time.Now().Add(24*time.Hour), []byte("type: news"))
	if err != nil {
		t.Fatal(err)
	}
	mb, err := lb.CreateCopy(ctx, m.Token())
	if err != nil {
		t.Fatal(err)
	}
	mc, err := lc.CreateCopy(ctx, m.Token())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*MO{m, mb, mc} {
		if err := x.PutReplication(ctx, Policy{Kind: Flooding}); err != nil {
			t.Fatal(err)
		}
	}
	n1, _ := lb.CreateNew(ctx, time.Now().Add(time.Hour), []byte("N1 from Bob"))
	if err := mb.Add(ctx, n1.Token()); err != nil {
		t.Fatal(err)
	}
	n2, _ := lc.CreateNew(ctx, time.Now().Add(time.Hour), []byte("N2 from Clare"))
	if err := mc.Add(ctx, n2.Token()); err != nil {
		t.Fatal(err)
	}
	servers := map[string]*Server{"alice": alice, "bob": bob, "clare": clare}
	checkFor(t, 15*time.Second, func() error {
		for name, s := range servers {
			if err := clusterHas(ctx, s, m.Token(), n1.Token(), n2.Token()); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			sh, _ := s.Shared(ctx)
			if len(sh) != 1 || len(sh[0].Peers) != 2 {
				return fmt.Errorf("%s knows peers %v", name, sh)
			}
			for other, o := range servers {
				if other != name && !slices.Contains(sh[0].Peers, o.PeerAddr().String()) {
					return fmt.Errorf("%s does not know %s", name, other)
				}
			}
		}
		return nil
	})
	// Alice reads Bob's news: fetched from Bob's server, its home.
	g, err := la.Get(ctx, n1.Token())
	if err != nil || string(g.Payload()) != "N1 from Bob" {
		t.Fatalf("read N1 at Alice: %v", err)
	}
	// A server without a matching policy does not take flooded items.
	dave := startServer(t, nil)
	ld := newLib(t, dave, keys)
	md, err := ld.CreateCopy(ctx, m.Token())
	if err != nil {
		t.Fatal(err)
	}
	if ts, _ := md.Cluster(ctx); len(ts) != 2 {
		t.Fatalf("copy at dave has %d members", len(ts))
	}
	n3, _ := la.CreateNew(ctx, time.Now().Add(time.Hour), []byte("N3"))
	m.Add(ctx, n3.Token())
	checkFor(t, 10*time.Second, func() error { return clusterHas(ctx, clare, m.Token(), n3.Token()) })
	if err := clusterHas(ctx, dave, m.Token(), n3.Token()); err == nil {
		t.Fatal("dave took a flooded item without a flooding policy")
	}
	// Dave cannot push items into Alice's copy through ASSENT either:
	// entries need the group's writer key.
	stranger := newLib(t, dave, mustKeys(t))
	bogus, _ := stranger.CreateNew(ctx, time.Now().Add(time.Hour), nil)
	if _, err := dave.Update(ctx, m.Token(), []Entry{NewEntry(stranger.Keys(), m.Token(), bogus.Token())}); err == nil {
		t.Fatal("foreign entry accepted")
	}
}
