package micro

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"slices"
	"sync"
)

// Set is a cluster held in memory for reconciliation: tokens sorted by
// copy-expire date (byte order), optional entry signatures, and prefix sums
// that give the fingerprint of any range in O(1) after O(n) preparation.
// A Set is safe for concurrent use.
type Set struct {
	mu    sync.Mutex // protects all fields
	toks  []Token
	sigs  [][64]byte // nil, or parallel to toks
	boxes [][]byte   // nil, or parallel to toks
	pre   [][2]uint64
	ok    bool // pre is current
}

// NewSet builds a set from entries (signatures kept) or, when entries is
// nil, from toks (no signatures). Input need not be sorted; duplicates go.
func NewSet(toks []Token, entries []Entry) *Set {
	s := &Set{}
	if entries != nil {
		slices.SortFunc(entries, func(a, b Entry) int { return a.Token.Compare(b.Token) })
		entries = slices.CompactFunc(entries, func(a, b Entry) bool { return a.Token == b.Token })
		s.toks = make([]Token, len(entries))
		s.sigs = make([][64]byte, len(entries))
		s.boxes = make([][]byte, len(entries))
		for i, e := range entries {
			s.toks[i], s.sigs[i], s.boxes[i] = e.Token, e.Sig, e.Box
		}
		return s
	}
	s.toks = slices.Clone(toks)
	slices.SortFunc(s.toks, func(a, b Token) int { return a.Compare(b) })
	s.toks = slices.Compact(s.toks)
	return s
}

// Len returns the number of tokens.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.toks)
}

// Has reports whether t is in the set.
func (s *Set) Has(t Token) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := slices.BinarySearchFunc(s.toks, t, func(a, b Token) int { return a.Compare(b) })
	return ok
}

// Add inserts e; it reports whether e was new.
func (s *Set) Add(e Entry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := slices.BinarySearchFunc(s.toks, e.Token, func(a, b Token) int { return a.Compare(b) })
	if ok {
		return false
	}
	s.toks = slices.Insert(s.toks, i, e.Token)
	if s.sigs != nil {
		s.sigs = slices.Insert(s.sigs, i, e.Sig)
		s.boxes = slices.Insert(s.boxes, i, e.Box)
	}
	s.ok = false
	return true
}

// Tokens returns a copy of the tokens in order.
func (s *Set) Tokens() []Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.toks)
}

// lowerBound returns the first index whose token is >= b (b may be a
// prefix). Callers hold mu.
func (s *Set) lowerBound(b []byte) int {
	if b == nil {
		return 0
	}
	i, _ := slices.BinarySearchFunc(s.toks, b, func(t Token, b []byte) int { return bytes.Compare(t[:], b) })
	return i
}

// prepare builds the prefix sums. Callers hold mu.
func (s *Set) prepare() {
	if s.ok {
		return
	}
	if cap(s.pre) < len(s.toks)+1 {
		s.pre = make([][2]uint64, len(s.toks)+1)
	}
	s.pre = s.pre[:len(s.toks)+1]
	var lo, hi uint64
	for i := range s.toks {
		h := s.toks[i][27:]
		var c uint64
		lo, c = bits.Add64(lo, binary.BigEndian.Uint64(h[8:16]), 0)
		hi, _ = bits.Add64(hi, binary.BigEndian.Uint64(h[0:8]), c)
		s.pre[i+1] = [2]uint64{lo, hi}
	}
	s.ok = true
}

// fingerprint returns the fingerprint of toks[i:j]: SHA-256 over the
// 128-bit sum of the members' hash prefixes and the count. Callers hold mu
// and have called prepare.
func (s *Set) fingerprint(i, j int) [16]byte {
	a, b := s.pre[j], s.pre[i]
	lo, borrow := bits.Sub64(a[0], b[0], 0)
	hi, _ := bits.Sub64(a[1], b[1], borrow)
	var buf [24]byte
	binary.BigEndian.PutUint64(buf[0:8], hi)
	binary.BigEndian.PutUint64(buf[8:16], lo)
	binary.BigEndian.PutUint64(buf[16:24], uint64(j-i))
	sum := sha256.Sum256(buf[:])
	var fp [16]byte
	copy(fp[:], sum[:16])
	return fp
}

func (s *Set) entry(i int) Entry {
	e := Entry{Token: s.toks[i]}
	if s.sigs != nil {
		e.Sig, e.Box = s.sigs[i], s.boxes[i]
	}
	return e
}
