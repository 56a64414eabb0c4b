package qsm

// Helpers on sorted, disjoint lists of inclusive sequence ranges.

// lackingOf returns the ranges in (lo, hi] that a slot does not hold.
func lackingOf(s *tokenSlot, lo, hi uint64) []seqRange {
	if hi <= lo {
		return nil
	}
	if s.State != slotStarted {
		return []seqRange{{lo + 1, hi}}
	}
	var out []seqRange
	for _, r := range s.Missing {
		out = appendClamped(out, r, lo, hi)
	}
	top := max(s.Ack, s.Upto)
	if top < hi {
		out = appendClamped(out, seqRange{top + 1, hi}, lo, hi)
	}
	return out
}

// appendClamped appends r clamped to (lo, hi], merging with the last range.
func appendClamped(out []seqRange, r seqRange, lo, hi uint64) []seqRange {
	if r.From <= lo {
		r.From = lo + 1
	}
	if r.To > hi {
		r.To = hi
	}
	if r.From > r.To {
		return out
	}
	if n := len(out); n > 0 && out[n-1].To+1 >= r.From {
		if r.To > out[n-1].To {
			out[n-1].To = r.To
		}
		return out
	}
	return append(out, r)
}

// union returns the seqs in a or b (both ascending).
func union(a, b []seqRange) []seqRange {
	var out []seqRange
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		var r seqRange
		if j >= len(b) || (i < len(a) && a[i].From <= b[j].From) {
			r = a[i]
			i++
		} else {
			r = b[j]
			j++
		}
		if n := len(out); n > 0 && out[n-1].To+1 >= r.From {
			out[n-1].To = max(out[n-1].To, r.To)
			continue
		}
		out = append(out, r)
	}
	return out
}

// intersect returns the seqs in both a and b.
func intersect(a, b []seqRange) []seqRange {
	var out []seqRange
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		from := max(a[i].From, b[j].From)
		to := min(a[i].To, b[j].To)
		if from <= to {
			out = append(out, seqRange{from, to})
		}
		if a[i].To < b[j].To {
			i++
		} else {
			j++
		}
	}
	return out
}

// subtract returns the seqs in a and not in b.
func subtract(a, b []seqRange) []seqRange {
	var out []seqRange
	j := 0
	for _, r := range a {
		from := r.From
		for j < len(b) && b[j].To < from {
			j++
		}
		k := j
		for k < len(b) && b[k].From <= r.To {
			if b[k].From > from {
				out = append(out, seqRange{from, b[k].From - 1})
			}
			if b[k].To >= r.To {
				from = r.To + 1
				break
			}
			from = b[k].To + 1
			k++
		}
		if from <= r.To {
			out = append(out, seqRange{from, r.To})
		}
	}
	return out
}

// capRanges keeps at most n ranges and returns them with the highest seq
// the kept list describes accurately (upto): seqs above it are unknown.
func capRanges(rs []seqRange, n int, upto uint64) ([]seqRange, uint64) {
	if len(rs) <= n {
		return rs, upto
	}
	return rs[:n], rs[n].From - 1
}
