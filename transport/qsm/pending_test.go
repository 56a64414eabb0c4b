package qsm

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport/internal/payload"
)

// ringModel is what a pendingRing must behave like: maps of the messages
// and noted gaps at or after next.
type ringModel struct {
	next uint64
	msgs map[uint64]*message
	gaps map[uint64]int64
}

// checkRing runs ops, decoded from b, on a ring and on the model, and
// compares them after each.
func checkRing(t *testing.T, b []byte) {
	t.Helper()
	const ahead = 300
	r := pendingRing{base: 5}
	md := ringModel{next: 5, msgs: map[uint64]*message{}, gaps: map[uint64]int64{}}
	clock := int64(1)
	for len(b) >= 2 {
		op, arg := b[0]%7, uint64(b[1])
		b = b[2:]
		clock++
		switch op {
		case 0, 1: // a message arrives
			seq := md.next + arg
			if md.msgs[seq] != nil {
				if r.get(seq) == nil {
					t.Fatalf("seq %d: ring lost its message", seq)
				}
				continue
			}
			m := &message{Seq: seq}
			got := r.put(seq, m)
			if want := md.gaps[seq]; got != want {
				t.Fatalf("put %d: gap time %d, want %d", seq, got, want)
			}
			delete(md.gaps, seq)
			md.msgs[seq] = m
		case 2: // a seq is seen missing
			seq := md.next + arg*3
			r.noteGap(seq, clock, md.next+ahead)
			if seq < md.next+ahead && md.msgs[seq] == nil && md.gaps[seq] == 0 {
				md.gaps[seq] = clock
			}
		case 3: // deliver what is in order
			for {
				m := r.take()
				want := md.msgs[md.next]
				if m != want {
					t.Fatalf("take at %d: %v, want %v", md.next, m, want)
				}
				if m == nil {
					break
				}
				delete(md.msgs, md.next)
				delete(md.gaps, md.next)
				md.next++
			}
		case 4: // deliver past a gap (an orphan stream skips it)
			to := md.next + arg%40 + 1
			r.advance(to)
			for s := md.next; s < to; s++ {
				delete(md.msgs, s)
				delete(md.gaps, s)
			}
			md.next = to
		case 5: // a token asks what is missing; a repair takes a gap
			if got, want := r.takeGap(md.next+arg), md.gaps[md.next+arg]; got != want {
				t.Fatalf("takeGap %d: %d, want %d", md.next+arg, got, want)
			}
			delete(md.gaps, md.next+arg)
			hi := md.next + arg
			got := r.missing(hi, 4)
			var want []seqRange
			from := md.next
			keys := make([]uint64, 0, len(md.msgs))
			for k := range md.msgs {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				if len(want) > 4 {
					break
				}
				if k > from {
					want = append(want, seqRange{from, k - 1})
				}
				from = k + 1
			}
			if from <= hi && len(want) <= 4 {
				want = append(want, seqRange{from, hi})
			}
			if !slices.Equal(got, want) {
				t.Fatalf("missing up to %d: %v, want %v", hi, got, want)
			}
		case 6: // a token notes what is missing up to a seq seen
			hi := md.next + arg*2
			ms, upto := capRanges(r.missing(hi, 4), 4, hi)
			r.noteMissing(ms, upto, clock, md.next+ahead)
			for seq := md.next; seq <= upto && seq < md.next+ahead; seq++ {
				if md.msgs[seq] == nil && md.gaps[seq] == 0 {
					md.gaps[seq] = clock
				}
			}
		}
		if r.base != md.next || r.n != len(md.msgs) || r.gaps != len(md.gaps) {
			t.Fatalf("op %d arg %d: ring base %d, %d messages, %d gaps; want %d, %d, %d", op, arg, r.base, r.n, r.gaps, md.next, len(md.msgs), len(md.gaps))
		}
		var seen []uint64
		r.each(func(seq uint64, m *message) {
			if m.Seq != seq || md.msgs[seq] != m {
				t.Fatalf("each: seq %d holds %v", seq, m)
			}
			seen = append(seen, seq)
		})
		if len(seen) != len(md.msgs) || !slices.IsSorted(seen) {
			t.Fatalf("each visited %v, the model holds %d", seen, len(md.msgs))
		}
	}
}

// TestPendingRing compares the ring with maps under random operations.
func TestPendingRing(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, 2000)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		checkRing(t, b)
	}
}

// FuzzPendingRing compares the ring with maps under operations the
// fuzzer picks.
func FuzzPendingRing(f *testing.F) {
	f.Add([]byte{0, 3, 0, 1, 2, 0, 3, 0, 0, 0, 3, 0, 5, 7})
	f.Add([]byte{0, 200, 2, 90, 4, 10, 5, 255, 1, 70, 0, 0, 3, 1})
	f.Fuzz(checkRing)
}

// TestForgottenStreamsReleasePayloads checks that the payloads of the
// messages a receive stream holds, delivered and kept or waiting behind a
// gap, are released when the engine forgets the stream: when a sender's
// stream is settled after it left the view (skipped messages included),
// and when every stream is dropped (a change of region or session). A
// payload never released keeps its block from being reused.
func TestForgottenStreamsReleasePayloads(t *testing.T) {
	cl := newCluster(t, testConfig(t), 1)
	var rc payload.Recycler
	var all []*message
	// stream returns a stream of a sender outside the view that has
	// delivered seqs 1-3 and holds 5 (an event's first fragment), 6 (its
	// last) and 7 (a whole event) behind the missing 4, and 9 (a first
	// fragment) behind the missing 8.
	stream := func(e *engine, sender uint64) *recvStream {
		rs := &recvStream{sender: sender, streamEpoch: 1, started: true, next: 1, keptBase: 1, pending: pendingRing{base: 1}}
		mk := func(seq uint64, flags uint8) *message {
			data, blk := rc.Copy(patterned(int(seq), 100))
			m := &message{Seq: seq, Group: 0x77, Source: 1, GSeq: seq, Flags: flags, Data: data, blk: blk}
			all = append(all, m)
			return m
		}
		for seq := uint64(1); seq <= 3; seq++ {
			e.deliverNext(rs, mk(seq, 0))
		}
		for seq, flags := range map[uint64]uint8{5: msgFlagMore, 6: 0, 7: 0, 9: msgFlagMore} {
			m := mk(seq, flags)
			m.held = true
			rs.pending.put(seq, m)
		}
		e.recvs[sender] = rs
		return rs
	}
	var orphanLost uint64
	ok := cl.svcs[0].inEngine(func(e *engine) {
		before := e.s.ctr.orphanLost.Load()
		rs := stream(e, 0x5e7710)
		rs.orphanAt = time.Now()
		e.settleOrphan(rs)
		orphanLost = e.s.ctr.orphanLost.Load() - before
		if e.recvs[0x5e7710] != nil {
			t.Error("a settled stream is still in the engine's streams")
		}
		stream(e, 0x5e7711)
		stream(e, 0x5e7712)
		e.dropRecvs()
		if len(e.recvs) != 0 {
			t.Errorf("%d streams left after dropping them all", len(e.recvs))
		}
	})
	if !ok {
		t.Fatal("the engine did not run the test")
	}
	// 4 is missing, 5 and 6 are the rest of an event that may have begun
	// with 4, 7 is delivered, 8 is missing and 9 follows it: five seqs
	// lost.
	if orphanLost != 5 {
		t.Errorf("settling counted %d seqs lost, want 5", orphanLost)
	}
	for _, m := range all {
		if m.blk != nil {
			t.Errorf("seq %d (flags %d): payload not released", m.Seq, m.Flags)
		}
	}
}

// BenchmarkTokenGaps measures what a node spends per token round on one
// stream that lacks most of a full receive window (32,768 seqs, one in a
// thousand held): finding the missing ranges and noting them to time
// their repair. "again" looks at every missing seq each round, as a ring
// without noteMissing's mark would; "once" is noteMissing, whose cost is
// then mostly the scan of missing.
//
//	go test ./transport/qsm -run '^$' -bench TokenGaps
func BenchmarkTokenGaps(b *testing.B) {
	const window = 32768
	setup := func() *pendingRing {
		r := &pendingRing{base: 1}
		for seq := uint64(1000); seq <= window; seq += 1000 {
			r.put(seq, &message{Seq: seq})
		}
		return r
	}
	b.Run("again", func(b *testing.B) {
		r := setup()
		for i := range b.N {
			ms, upto := capRanges(r.missing(window, maxSlotRanges), maxSlotRanges, window)
			for _, g := range ms {
				for x := g.From; x <= min(g.To, upto); x++ {
					r.noteGap(x, int64(i+1), 1+window)
				}
			}
		}
	})
	b.Run("once", func(b *testing.B) {
		r := setup()
		for i := range b.N {
			ms, upto := capRanges(r.missing(window, maxSlotRanges), maxSlotRanges, window)
			r.noteMissing(ms, upto, int64(i+1), 1+window)
		}
	})
}
