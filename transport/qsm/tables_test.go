package qsm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSourceTable checks the delivery positions by source number: dense
// below denseSources, in a map above, and dropped once their group has
// lost its last local member (also to make room under the cap).
func TestSourceTable(t *testing.T) {
	old := maxSparseSources
	maxSparseSources = 2
	t.Cleanup(func() { maxSparseSources = old })
	var tab sourceTable
	if tab.find(3) != nil || tab.find(denseSources+5) != nil {
		t.Fatal("empty table finds entries")
	}
	g7, g8 := &localGroup{id: 7}, &localGroup{id: 8}
	*tab.add(3) = sourceLast{group: 7, gseq: 10, g: g7}
	*tab.add(denseSources + 5) = sourceLast{group: 8, gseq: 4, g: g8}
	*tab.add(denseSources + 6) = sourceLast{group: 8, gseq: 2, g: g8}
	*tab.add(1) = sourceLast{group: 8, gseq: 1, g: g8}
	if sl := tab.find(3); sl == nil || sl.gseq != 10 || sl.g != g7 {
		t.Fatalf("find(3) = %+v", sl)
	}
	if tab.find(2) != nil {
		t.Fatal("find(2) on a slot never added")
	}
	if sl := tab.find(denseSources + 5); sl == nil || sl.gseq != 4 {
		t.Fatalf("find(large) = %+v", sl)
	}
	if tab.add(denseSources+7) != nil {
		t.Fatal("a third source above denseSources got room (cap 2)")
	}
	g8.gone = true
	if tab.find(1) != nil || tab.find(denseSources+5) != nil {
		t.Fatal("entries of group 8 found after it went")
	}
	if tab.dense[1] != (sourceLast{}) || len(tab.more) != 1 {
		t.Fatalf("entries found gone were kept: dense[1] = %+v, %d above", tab.dense[1], len(tab.more))
	}
	if sl := tab.find(3); sl == nil || sl.gseq != 10 {
		t.Fatal("an entry of group 7 went with group 8")
	}
	// The entry of group 8 never looked up again is swept for room.
	if sl := tab.add(denseSources + 7); sl == nil {
		t.Fatal("no room above denseSources, though group 8 went")
	} else {
		*sl = sourceLast{group: 7, gseq: 1, g: g7}
	}
	if sl := tab.add(denseSources + 8); sl == nil || len(tab.more) != 2 {
		t.Fatalf("add after sweeping: %v, %d above (cap 2)", sl, len(tab.more))
	}
}

// TestClientMemberTable checks the engine's table of a client's members.
func TestClientMemberTable(t *testing.T) {
	c := &svcClient{}
	m1, m2 := &localMember{id: 1}, &localMember{id: 900}
	c.setMember(1, m1)
	c.setMember(900, m2)
	c.setMember(denseMembers+1, &localMember{})
	if c.member(1) != m1 || c.member(900) != m2 || c.member(2) != nil || c.member(denseMembers+1) != nil {
		t.Fatal("wrong members found")
	}
	c.setMember(900, nil)
	c.setMember(5000, nil) // beyond the table: nothing to clear
	if c.member(900) != nil || len(c.byID) != 901 {
		t.Fatalf("after clearing: member %v, table of %d", c.member(900), len(c.byID))
	}
}

func TestSenderString(t *testing.T) {
	for _, c := range []struct {
		node   uint64
		source uint32
	}{{0, 0}, {1, 1}, {0xdeadbeef, 42}, {^uint64(0), ^uint32(0)}, {0x0123456789abcdef, 8000}} {
		if got, want := senderString(c.node, c.source), fmt.Sprintf("%016x/%d", c.node, c.source); got != want {
			t.Errorf("senderString(%#x, %d) = %q, want %q", c.node, c.source, got, want)
		}
	}
}

// TestAckQueueModel runs a member's queue of publishes in flight against
// a plain slice: publishes with and without a waiter, in runs of each
// (a run of thousands of waiters takes the array through its
// compaction), taken back, answered and failed all at once, in a random
// order of operations.
func TestAckQueueModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 7))
	chans := make([]chan pubResult, 64)
	for i := range chans {
		chans[i] = make(chan pubResult)
	}
	var a ackQueue
	var model []chan pubResult
	for op := 0; op < 200000; op++ {
		switch r := rng.IntN(100); {
		case r < 45:
			// A run of one kind of publish, long now and then.
			n := 1 + rng.IntN(4)
			if rng.IntN(200) == 0 {
				n = 3000
			}
			async := rng.IntN(2) == 0
			for range n {
				var ch chan pubResult
				if !async {
					ch = chans[rng.IntN(len(chans))]
				}
				a.push(ch)
				model = append(model, ch)
			}
		case r < 50:
			if len(model) > 0 {
				a.dropLast()
				model = model[:len(model)-1]
			}
		case r < 99:
			for n := 1 + rng.IntN(8); n > 0 && len(model) > 0; n-- {
				if got := a.pop(); got != model[0] {
					t.Fatalf("op %d: pop returned %v, want %v", op, got, model[0])
				}
				model = model[1:]
			}
		default:
			if got := a.takeAll(); !slices.Equal(got, model) {
				t.Fatalf("op %d: takeAll returned %d entries, want %d (or another order)", op, len(got), len(model))
			}
			model = nil
		}
		if a.len() != len(model) {
			t.Fatalf("op %d: len %d, want %d", op, a.len(), len(model))
		}
	}
}

// TestAckQueue checks a member's queue of publishes in flight: first in,
// first out across the reuse and compaction of its array, and no
// allocation per publish once a publish or two at a time are in flight.
func TestAckQueue(t *testing.T) {
	var a ackQueue
	chans := make([]chan pubResult, 5000)
	for i := range chans {
		chans[i] = make(chan pubResult)
	}
	next, want := 0, 0
	for round := 0; round < 3; round++ {
		// Fill well past the compaction point, then drain most of it.
		for i := 0; i < 3000; i++ {
			a.push(chans[next%len(chans)])
			next++
		}
		a.push(nil)
		a.dropLast()
		for a.len() > 100 {
			if got := a.pop(); got != chans[want%len(chans)] {
				t.Fatalf("round %d: pop %d returned another publish's channel", round, want)
			}
			want++
		}
	}
	if a.len() != next-want || a.head > len(a.q) {
		t.Fatalf("len %d, want %d (head %d of %d)", a.len(), next-want, a.head, len(a.q))
	}
	rest := a.takeAll()
	for i, ch := range rest {
		if ch != chans[(want+i)%len(chans)] {
			t.Fatalf("takeAll[%d] is another publish's channel", i)
		}
	}
	if a.len() != 0 {
		t.Fatal("takeAll left publishes")
	}
	ch := chans[0]
	if n := testing.AllocsPerRun(1000, func() {
		a.push(ch)
		a.push(nil)
		a.pop()
		a.pop()
	}); n != 0 {
		t.Fatalf("%v allocations per two publishes in flight, want 0", n)
	}
}
