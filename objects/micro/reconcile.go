package micro

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
)

// Range-based set reconciliation of clusters (after Meyer's range-based
// set reconciliation, as used by negentropy). A message is a list of
// consecutive ranges covering the whole token space; each range ends at an
// exclusive upper bound (a token prefix, or infinity) and says one of:
//
//	skip         nothing to do here
//	fingerprint  my count and fingerprint; compare and answer
//	items        all my entries here; answer with the ones I lack
//	items-back   the entries you lacked here; no answer needed
//
// A side that sees a differing fingerprint splits its own items into
// reconBranch sub-ranges, or lists them when there are at most
// reconThreshold. Two clusters of n tokens with d differences settle in
// about log_16(n/8)/2 + 1 round trips and O(d log n) bytes (measured: 3
// round trips for 10^4 and 10^5 tokens with 100 differences, 4 for 10^6).

// Reconciliation range modes. ONLY APPEND: the values are on the wire.
const (
	modeSkip        = 0
	modeFingerprint = 1
	modeItems       = 2
	modeItemsBack   = 3
)

const (
	reconVersion   = 1
	reconBranch    = 16
	reconThreshold = 8
	// reconBudget bounds the bytes of one reconciliation message; ranges
	// that would exceed it are split and settled in later rounds.
	reconBudget = 1 << 20
	// maxReconRanges bounds the ranges a peer may send in one message.
	maxReconRanges = 1 << 16
)

// rrange is one range of a reconciliation message.
type rrange struct {
	bound []byte // exclusive upper bound; nil means infinity
	mode  uint8
	count uint64
	fp    [16]byte
	items []Entry
}

// reconMsg encodes ranges.
func encodeRecon(rs []rrange) []byte {
	b := []byte{reconVersion}
	b = binary.AppendUvarint(b, uint64(len(rs)))
	for _, r := range rs {
		if r.bound == nil {
			b = append(b, 0xFF)
		} else {
			b = append(b, byte(len(r.bound)))
			b = append(b, r.bound...)
		}
		b = append(b, r.mode)
		switch r.mode {
		case modeFingerprint:
			b = binary.AppendUvarint(b, r.count)
			b = append(b, r.fp[:]...)
		case modeItems, modeItemsBack:
			b = binary.AppendUvarint(b, uint64(len(r.items)))
			for _, e := range r.items {
				b = append(b, e.Token[:]...)
				b = append(b, e.Sig[:]...)
				b = append(b, byte(len(e.Box)))
				b = append(b, e.Box...)
			}
		}
	}
	return b
}

// decodeRecon parses a reconciliation message, checking every length
// before allocating and that bounds increase.
func decodeRecon(b []byte) ([]rrange, error) {
	d := decoder{b: b}
	if v := d.u8(); v != reconVersion {
		if d.err != nil {
			return nil, fmt.Errorf("micro: reconcile: %w", d.err)
		}
		return nil, fmt.Errorf("micro: reconcile: %w: message version %d", ErrVersionMismatch, v)
	}
	n := d.uvarint()
	if n > maxReconRanges {
		return nil, fmt.Errorf("micro: reconcile: %w: %d ranges", ErrTooLarge, n)
	}
	var rs []rrange
	var prev []byte
	for i := uint64(0); i < n && d.err == nil; i++ {
		var r rrange
		bl := d.u8()
		switch {
		case bl == 0xFF:
		case int(bl) > TokenSize:
			return nil, fmt.Errorf("micro: reconcile: %w: bound of %d bytes", ErrProtocol, bl)
		default:
			r.bound = bytes.Clone(d.bytes(int(bl)))
			if r.bound == nil {
				r.bound = []byte{}
			}
		}
		if prev == nil && i > 0 {
			return nil, fmt.Errorf("micro: reconcile: %w: range after infinity", ErrProtocol)
		}
		if i > 0 && r.bound != nil && bytes.Compare(r.bound, prev) <= 0 {
			return nil, fmt.Errorf("micro: reconcile: %w: bounds do not increase", ErrProtocol)
		}
		prev = r.bound
		r.mode = d.u8()
		switch r.mode {
		case modeSkip:
		case modeFingerprint:
			r.count = d.uvarint()
			copy(r.fp[:], d.bytes(16))
		case modeItems, modeItemsBack:
			k := d.uvarint()
			if k > uint64(d.remaining()/entrySize) {
				return nil, fmt.Errorf("micro: reconcile: %w: %d items in %d bytes", ErrProtocol, k, d.remaining())
			}
			r.items = make([]Entry, k)
			for j := range r.items {
				copy(r.items[j].Token[:], d.bytes(TokenSize))
				copy(r.items[j].Sig[:], d.bytes(64))
				if n := int(d.u8()); n > 0 {
					if n != boxSize {
						return nil, fmt.Errorf("micro: reconcile: %w: box of %d bytes", ErrProtocol, n)
					}
					r.items[j].Box = bytes.Clone(d.bytes(n))
				}
			}
		default:
			return nil, fmt.Errorf("micro: reconcile: %w: range mode %d", ErrProtocol, r.mode)
		}
		rs = append(rs, r)
	}
	if d.err != nil {
		return nil, fmt.Errorf("micro: reconcile: %w", d.err)
	}
	if d.remaining() != 0 {
		return nil, fmt.Errorf("micro: reconcile: %w: %d trailing bytes", ErrProtocol, d.remaining())
	}
	return rs, nil
}

// reconOut builds an outgoing message, merging adjacent skips and keeping
// to the byte budget.
type reconOut struct {
	rs    []rrange
	size  int
	reply bool // some range needs an answer
}

func (o *reconOut) add(r rrange) {
	if r.mode == modeSkip && len(o.rs) > 0 && o.rs[len(o.rs)-1].mode == modeSkip {
		o.rs[len(o.rs)-1].bound = r.bound
		return
	}
	o.size += 2 + len(r.bound) + 10 + 16 + len(r.items)*(entrySize+boxSize)
	if r.mode == modeFingerprint || r.mode == modeItems {
		o.reply = true
	}
	o.rs = append(o.rs, r)
}

// split emits fingerprints for toks[i:j] in up to reconBranch sub-ranges,
// the last ending at hi. Callers hold s.mu and have prepared s.
func (s *Set) split(o *reconOut, i, j int, hi []byte) {
	n := j - i
	parts := min(reconBranch, n)
	start := i
	for k := 1; k <= parts; k++ {
		end := i + k*n/parts
		var bound []byte
		if k == parts {
			bound = hi
		} else {
			bound = minimalBound(s.toks[end-1], s.toks[end])
		}
		o.add(rrange{bound: bound, mode: modeFingerprint, count: uint64(end - start), fp: s.fingerprint(start, end)})
		start = end
	}
}

// minimalBound returns the shortest prefix of b that is greater than a
// (a < b).
func minimalBound(a, b Token) []byte {
	d := 0
	for d < TokenSize && a[d] == b[d] {
		d++
	}
	return bytes.Clone(b[:min(d+1, TokenSize)])
}

// emitItems lists toks[i:j] in a range of the given mode.
func (s *Set) emitItems(o *reconOut, mode uint8, i, j int, hi []byte) {
	items := make([]Entry, 0, j-i)
	for k := i; k < j; k++ {
		items = append(items, s.entry(k))
	}
	o.add(rrange{bound: hi, mode: mode, items: items})
}

// reconInitiate returns the first message of a reconciliation.
func (s *Set) reconInitiate() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prepare()
	var o reconOut
	if len(s.toks) <= reconThreshold {
		s.emitItems(&o, modeItems, 0, len(s.toks), nil)
	} else {
		s.split(&o, 0, len(s.toks), nil)
	}
	return encodeRecon(o.rs)
}

// reconRespond processes one incoming message. It returns the answer (nil
// when none is needed) and the entries the other side has that s lacks.
// It does not add them to s; the caller decides what to keep.
func (s *Set) reconRespond(msg []byte) (answer []byte, learned []Entry, err error) {
	in, err := decodeRecon(msg)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prepare()
	var o reconOut
	var lo []byte
	cmp := func(a, b Token) int { return a.Compare(b) }
	for _, r := range in {
		i := s.lowerBound(lo)
		j := len(s.toks)
		if r.bound != nil {
			j = s.lowerBound(r.bound)
		}
		if j < i {
			j = i
		}
		inRange := func(t Token) bool {
			return (lo == nil || bytes.Compare(t[:], lo) >= 0) && (r.bound == nil || bytes.Compare(t[:], r.bound) < 0)
		}
		switch r.mode {
		case modeSkip:
			o.add(rrange{bound: r.bound, mode: modeSkip})
		case modeFingerprint:
			switch {
			case uint64(j-i) == r.count && s.fingerprint(i, j) == r.fp:
				o.add(rrange{bound: r.bound, mode: modeSkip})
			case o.size > reconBudget:
				o.add(rrange{bound: r.bound, mode: modeFingerprint, count: uint64(j - i), fp: s.fingerprint(i, j)})
			case j-i <= reconThreshold:
				s.emitItems(&o, modeItems, i, j, r.bound)
			default:
				s.split(&o, i, j, r.bound)
			}
		case modeItems, modeItemsBack:
			theirs := make(map[Token]bool, len(r.items))
			for _, e := range r.items {
				if !inRange(e.Token) {
					return nil, nil, fmt.Errorf("micro: reconcile: %w: item outside its range", ErrProtocol)
				}
				theirs[e.Token] = true
				if _, ok := slices.BinarySearchFunc(s.toks, e.Token, cmp); !ok {
					learned = append(learned, e)
				}
			}
			if r.mode == modeItemsBack {
				o.add(rrange{bound: r.bound, mode: modeSkip})
				break
			}
			var back []Entry
			for k := i; k < j; k++ {
				if !theirs[s.toks[k]] {
					back = append(back, s.entry(k))
				}
			}
			switch {
			case len(back) == 0:
				o.add(rrange{bound: r.bound, mode: modeSkip})
			case o.size > reconBudget:
				o.add(rrange{bound: r.bound, mode: modeFingerprint, count: uint64(j - i), fp: s.fingerprint(i, j)})
			case o.size+len(back)*entrySize > reconBudget && len(back) > 1:
				s.split(&o, i, j, r.bound)
			default:
				o.add(rrange{bound: r.bound, mode: modeItemsBack, items: back})
			}
		}
		lo = r.bound
	}
	if !o.reply {
		// Only skips and items-back: send the items back if any, and
		// tell the caller no further answer is expected.
		for _, r := range o.rs {
			if r.mode == modeItemsBack {
				return encodeRecon(o.rs), learned, nil
			}
		}
		return nil, learned, nil
	}
	return encodeRecon(o.rs), learned, nil
}

// needsAnswer reports whether msg holds a range that expects an answer.
func needsAnswer(msg []byte) bool {
	rs, err := decodeRecon(msg)
	if err != nil {
		return false
	}
	for _, r := range rs {
		if r.mode == modeFingerprint || r.mode == modeItems {
			return true
		}
	}
	return false
}

// ReconStats counts the cost of one reconciliation.
type ReconStats struct {
	// RoundTrips is the number of request/answer exchanges.
	RoundTrips int
	// BytesSent and BytesReceived count reconciliation message bytes.
	BytesSent, BytesReceived int64
	// Learned and Given count entries each side learned.
	Learned, Given int
}
