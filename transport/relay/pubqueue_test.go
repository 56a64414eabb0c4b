package relay

import "testing"

// TestPubQueue: in-order takes, holes, lookups across gaps in counters
// and compaction keep every pending publish reachable exactly once.
func TestPubQueue(t *testing.T) {
	var q pubQueue
	want := map[uint64]bool{}
	for c := uint64(1); c <= 5000; c++ {
		if c%7 == 0 {
			continue // counters used by requests leave gaps
		}
		q.push(&pub{counter: c})
		want[c] = true
	}
	// Drop a few from the middle, then acknowledge from the front.
	dropped := q.removeIf(func(p *pub) bool { return p.counter%100 == 1 })
	for _, p := range dropped {
		delete(want, p.counter)
	}
	if q.get(101) != nil || q.take(101) != nil {
		t.Fatal("a dropped publish is still found")
	}
	if q.get(7) != nil {
		t.Fatal("a counter never pushed is found")
	}
	for c := uint64(1); c <= 3000; c++ {
		p := q.take(c)
		if want[c] != (p != nil) {
			t.Fatalf("take(%d) = %v, want present %v", c, p, want[c])
		}
		if p != nil && p.counter != c {
			t.Fatalf("take(%d) returned counter %d", c, p.counter)
		}
		delete(want, c)
	}
	if q.Len() != len(want) {
		t.Fatalf("Len %d, want %d", q.Len(), len(want))
	}
	var last uint64
	n := 0
	q.each(func(p *pub) {
		if p.counter <= last || !want[p.counter] {
			t.Fatalf("each: counter %d after %d", p.counter, last)
		}
		last = p.counter
		n++
	})
	if n != len(want) {
		t.Fatalf("each visited %d, want %d", n, len(want))
	}
	// Out of order: take from the back, then the rest.
	if p := q.take(4999); p == nil || p.counter != 4999 {
		t.Fatalf("take(4999) = %v", p)
	}
	rest := q.removeIf(func(*pub) bool { return true })
	if len(rest) != len(want)-1 || q.Len() != 0 {
		t.Fatalf("removeIf returned %d, Len %d", len(rest), q.Len())
	}
	q.push(&pub{counter: 6000})
	if q.get(6000) == nil || q.Len() != 1 {
		t.Fatal("push after draining")
	}
}
