package qsm

import "time"

// pendingRing holds what a receiver knows of the seqs of one stream at
// and after the next seq to deliver: the messages that came ahead of it
// (out of order, behind a gap) and, for seqs still missing, when they were
// first seen missing (to time repairs). It is a ring indexed by seq, so
// that a message costs a store and a load instead of a map's hashing:
// under loss nearly every message waits here behind some gap.
//
// The ring covers seqs [base, base+len(slots)) and grows, doubling, to
// hold a seq further ahead; the engine takes nothing at or beyond
// recvAhead of the next seq, which bounds it. The zero value is empty,
// with base 0.
type pendingRing struct {
	slots []pendingSlot // length a power of two, or zero
	base  uint64        // lowest seq covered; the stream's next seq
	n     int           // messages held
	gaps  int           // missing seqs noted
	top   uint64        // one past the highest seq holding a message (0: none)
	// noted is where noteMissing goes on from: every seq from base up to
	// it holds a message or has been noted missing (or is beyond the
	// limit it was given). A token reports the same gaps round after
	// round; only the new ones are looked at.
	noted uint64
}

// maxGapAhead bounds how far ahead of the next seq missing seqs are
// noted: the times only measure repairs, and a peer's word on how far a
// stream reaches must not make the ring grow.
const maxGapAhead = 1 << 16

// pendingSlot is one seq's entry: its message, or when it was first seen
// missing (0: not noted).
type pendingSlot struct {
	m   *message
	gap int64 // mono time + 1
}

// monoStart is the origin of the ring's times: differences of monotonic
// readings, stored as integers.
var monoStart = time.Now()

func monoOf(t time.Time) int64 { return int64(t.Sub(monoStart)) + 1 }

// slot returns seq's slot, nil when the ring does not cover seq.
func (r *pendingRing) slot(seq uint64) *pendingSlot {
	if seq < r.base || seq-r.base >= uint64(len(r.slots)) {
		return nil
	}
	return &r.slots[seq&uint64(len(r.slots)-1)]
}

// get returns the message held for seq, or nil.
func (r *pendingRing) get(seq uint64) *message {
	if s := r.slot(seq); s != nil {
		return s.m
	}
	return nil
}

// grow makes the ring cover seq (seq >= base).
func (r *pendingRing) grow(seq uint64) *pendingSlot {
	need := seq - r.base + 1
	size := max(len(r.slots), 64)
	for uint64(size) < need {
		size *= 2
	}
	if size != len(r.slots) {
		slots := make([]pendingSlot, size)
		if r.n > 0 || r.gaps > 0 {
			for i := range uint64(len(r.slots)) {
				s := r.base + i
				slots[s&uint64(size-1)] = r.slots[s&uint64(len(r.slots)-1)]
			}
		}
		r.slots = slots
	}
	return &r.slots[seq&uint64(len(r.slots)-1)]
}

// put holds m for seq (seq >= base, no message held for it yet) and
// returns when seq was first seen missing (0: it was not noted).
func (r *pendingRing) put(seq uint64, m *message) (gapAt int64) {
	s := r.slot(seq)
	if s == nil {
		s = r.grow(seq)
	}
	gapAt = r.clearGap(s)
	s.m = m
	r.n++
	r.top = max(r.top, seq+1)
	return gapAt
}

func (r *pendingRing) clearGap(s *pendingSlot) int64 {
	g := s.gap
	if g != 0 {
		s.gap = 0
		r.gaps--
	}
	return g
}

// takeGap forgets that seq was missing and returns since when (0: not
// noted).
func (r *pendingRing) takeGap(seq uint64) int64 {
	if r.gaps == 0 {
		return 0
	}
	if s := r.slot(seq); s != nil {
		at := r.clearGap(s)
		if at != 0 && seq < r.noted {
			r.noted = seq // seq holds neither a message nor a note now
		}
		return at
	}
	return 0
}

// noteGap notes that seq (>= base) is missing at t, unless it holds a
// message or was noted before. Seqs beyond limit are not noted.
func (r *pendingRing) noteGap(seq uint64, t int64, limit uint64) {
	if seq < r.base || seq >= limit {
		return
	}
	s := r.slot(seq)
	if s == nil {
		s = r.grow(seq)
	}
	if s.m == nil && s.gap == 0 {
		s.gap = t
		r.gaps++
	}
}

// noteMissing notes at t, as noteGap does, the seqs of ms up to upto and
// below limit. ms must list, in order, every seq in [base, upto] that
// holds no message (as missing and capRanges make it). Seqs below where
// the previous call got to are not looked at again, so the cost of a gap
// is paid once, not once per token.
func (r *pendingRing) noteMissing(ms []seqRange, upto uint64, t int64, limit uint64) {
	from := max(r.noted, r.base)
	for _, g := range ms {
		for x := max(g.From, from); x <= min(g.To, upto) && x < limit; x++ {
			r.noteGap(x, t, limit)
		}
	}
	r.noted = max(from, min(satAdd(upto, 1), limit))
}

// advance moves base to seq (> base), dropping what the seqs before it
// hold.
func (r *pendingRing) advance(seq uint64) {
	if r.n == 0 && r.gaps == 0 {
		r.base = seq
		return
	}
	if seq-r.base >= uint64(len(r.slots)) {
		clear(r.slots)
		r.base, r.n, r.gaps, r.top = seq, 0, 0, 0
		return
	}
	mask := uint64(len(r.slots) - 1)
	for ; r.base < seq; r.base++ {
		s := &r.slots[r.base&mask]
		if s.m != nil {
			s.m = nil
			r.n--
		}
		r.clearGap(s)
	}
	if r.n == 0 {
		r.top = 0
	}
}

// take removes and returns the message at base, advancing base past it,
// or returns nil when base holds none.
func (r *pendingRing) take() *message {
	if r.n == 0 {
		return nil
	}
	s := r.slot(r.base)
	if s == nil || s.m == nil {
		return nil
	}
	m := s.m
	s.m = nil
	r.n--
	r.clearGap(s)
	r.base++
	if r.n == 0 {
		r.top = 0
	}
	return m
}

// missing returns the ranges of seqs in [base, hi] that hold no message,
// in order, and stops after more than max ranges.
func (r *pendingRing) missing(hi uint64, max int) []seqRange {
	var dst []seqRange
	from := r.base
	if r.n > 0 {
		mask := uint64(len(r.slots) - 1)
		for seq := r.base; seq < r.top && len(dst) <= max; seq++ {
			if r.slots[seq&mask].m == nil {
				continue
			}
			if seq > from {
				dst = append(dst, seqRange{from, seq - 1})
			}
			from = seq + 1
		}
	}
	if from <= hi && len(dst) <= max {
		dst = append(dst, seqRange{from, hi})
	}
	return dst
}

// each calls f for every message held, in seq order.
func (r *pendingRing) each(f func(seq uint64, m *message)) {
	if r.n == 0 {
		return
	}
	mask := uint64(len(r.slots) - 1)
	for seq := r.base; seq < r.top; seq++ {
		if m := r.slots[seq&mask].m; m != nil {
			f(seq, m)
		}
	}
}
