package micro

import (
	"fmt"
	"testing"
	"time"
)

// TestFloodRepairsAfterRestart stops Clare's server while Bob adds an
// item; when Clare comes back (same address and data), the periodic
// flooding brings her the item.
func TestFloodRepairsAfterRestart(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	alice, bob := startServer(t, nil), startServer(t, nil)
	cdir := t.TempDir()
	clare := startServer(t, func(c *ServerConfig) { c.DataDir = cdir })
	caddr := clare.Addr().String()
	la, lb, lc := newLib(t, alice, keys), newLib(t, bob, keys), NewLib(clare, keys)
	m, _ := la.CreateNew(ctx, time.Now().Add(time.Hour), []byte("M"))
	for _, l := range []*Lib{la, lb, lc} {
		c, err := l.CreateCopy(ctx, m.Token())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.PutReplication(ctx, Policy{Kind: Flooding}); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 10*time.Second, func() error {
		for _, s := range []*Server{alice, bob} {
			if sh, _ := s.Shared(ctx); len(sh) != 1 || len(sh[0].Peers) != 2 {
				return fmt.Errorf("peers %v", sh)
			}
		}
		return nil
	})
	lc.Close()
	clare.Close()
	mb, _ := lb.Get(ctx, m.Token())
	n1, _ := lb.CreateNew(ctx, time.Now().Add(time.Hour), []byte("while clare was away"))
	if err := mb.Add(ctx, n1.Token()); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error { return clusterHas(ctx, alice, m.Token(), n1.Token()) })
	clare = startServer(t, func(c *ServerConfig) { c.DataDir = cdir; c.Listen = caddr })
	checkFor(t, 15*time.Second, func() error { return clusterHas(ctx, clare, m.Token(), n1.Token()) })
}

// TestDittoAfterExpiry: once the home has dropped an expired object, its
// NOT-FOUND answer names servers that fetched it, and they still serve it.
func TestDittoAfterExpiry(t *testing.T) {
	ctx := tctx(t)
	keys := mustKeys(t)
	clk := &fakeClock{t: time.Now()}
	alice := startServer(t, func(c *ServerConfig) { c.Clock = clk.Now; c.SweepInterval = -1; c.Grace = time.Second })
	bob := startServer(t, func(c *ServerConfig) { c.SweepInterval = -1 })
	clare := startServer(t, nil)
	m, _ := newLib(t, alice, keys).CreateNew(ctx, time.Now().Add(time.Minute), []byte("old news"))
	if _, err := newLib(t, bob, keys).Get(ctx, m.Token()); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	if n, _ := alice.Sweep(); n != 1 {
		t.Fatalf("swept %d", n)
	}
	g, err := newLib(t, clare, keys).Get(ctx, m.Token())
	if err != nil || string(g.Payload()) != "old news" {
		t.Fatalf("after expiry: %v", err)
	}
	if bob.Stats().FetchesServed != 1 {
		t.Fatal("not served by bob")
	}
}
