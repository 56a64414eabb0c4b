package micro

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Measurements shared by the package benchmarks and "liveobjects bench
// mo". Each runs the MO system and a raw baseline on the same bytes in the
// same run.

// ReconMeasure is the cost of reconciling two clusters.
type ReconMeasure struct {
	// N is the size of each cluster; Diffs the size of the symmetric
	// difference (half on each side).
	N, Diffs int
	// Stats is the cost of range-based reconciliation.
	Stats ReconStats
	// FullBytes is the cost of a full exchange: one side's whole cluster
	// (token and signature per entry), in one round trip.
	FullBytes int64
	// Elapsed is the wall time of the reconciliation (both sides, one
	// process).
	Elapsed time.Duration
}

// randomClusterTokens returns n tokens with copy-expire dates spread over
// a year, from a seeded generator.
func randomClusterTokens(r *rand.Rand, n int) []Token {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	ts := make([]Token, n)
	for i := range ts {
		binary.BigEndian.PutUint64(ts[i][0:8], uint64(base+r.Int64N(365*24*3600*1000)))
		ts[i][8] = tokenVersion
		for j := 9; j < TokenSize; j += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], r.Uint64())
			copy(ts[i][j:], w[:])
		}
	}
	return ts
}

// MeasureReconcile builds two clusters of n tokens that differ in diffs
// tokens (diffs/2 only on each side) and reconciles them.
func MeasureReconcile(ctx context.Context, n, diffs int) (ReconMeasure, error) {
	a, b := reconcilePair(n, diffs)
	return measureReconcilePair(ctx, a, b, n, diffs)
}

// reconcilePair builds two sets of n tokens differing in diffs.
func reconcilePair(n, diffs int) (a, b *Set) {
	r := rand.New(rand.NewPCG(uint64(n), uint64(diffs)))
	half := diffs / 2
	all := randomClusterTokens(r, n+half)
	common := all[:n-half]
	a = NewSet(append(append([]Token{}, common...), all[n-half:n]...), nil)
	b = NewSet(append(append([]Token{}, common...), all[n:]...), nil)
	return a, b
}

func measureReconcilePair(ctx context.Context, a, b *Set, n, diffs int) (ReconMeasure, error) {
	half := diffs / 2
	start := time.Now()
	la, lb, st, err := ReconcileSets(ctx, a, b)
	m := ReconMeasure{N: n, Diffs: diffs, Stats: st, FullBytes: int64(n) * entrySize, Elapsed: time.Since(start)}
	if err != nil {
		return m, err
	}
	if len(la) != diffs-half || len(lb) != half {
		return m, fmt.Errorf("micro: measure: learned %d and %d, want %d and %d", len(la), len(lb), diffs-half, half)
	}
	return m, nil
}

// ThroughputMeasure compares an MO operation with raw bbolt on the same
// bytes.
type ThroughputMeasure struct {
	// Ops is the number of operations of each kind.
	Ops int
	// Size is the payload size.
	Size int
	// MOPerSec and RawPerSec are operations per second.
	MOPerSec, RawPerSec float64
}

// Ratio is MOPerSec / RawPerSec.
func (m ThroughputMeasure) Ratio() float64 {
	if m.RawPerSec == 0 {
		return 0
	}
	return m.MOPerSec / m.RawPerSec
}

func quietServer(ctx context.Context, dir string) (*Server, error) {
	s, err := NewServer(ServerConfig{
		Listen: "127.0.0.1:0", DataDir: dir, LocalSocket: "-", SweepInterval: -1, FloodInterval: -1,
		CacheBytes: 1 << 30, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// rawBolt puts and gets records in a plain bbolt file, one transaction
// per operation as the MO store does.
type rawBolt struct{ db *bolt.DB }

func openRaw(dir string) (*rawBolt, error) {
	db, err := bolt.Open(filepath.Join(dir, "raw.db"), 0o600, nil)
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists([]byte("raw")); return err })
	return &rawBolt{db}, err
}

func (r *rawBolt) put(k, v []byte) error {
	return r.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("raw")).Put(k, v) })
}

func (r *rawBolt) get(k []byte) (v []byte, err error) {
	err = r.db.View(func(tx *bolt.Tx) error {
		v = append([]byte(nil), tx.Bucket([]byte("raw")).Get(k)...)
		return nil
	})
	return v, err
}

// measureBatch is how many operations run before switching between the
// MO system and the raw baseline; interleaving keeps a noisy disk or a
// busy machine from favouring either side.
const measureBatch = 100

// MeasureAdopt creates and adopts n objects of size bytes (seal, sign,
// hash, store) and puts the same records into a raw bbolt file, in
// interleaved batches.
func MeasureAdopt(ctx context.Context, dir string, n, size int) (ThroughputMeasure, error) {
	m := ThroughputMeasure{Ops: n, Size: size}
	s, err := quietServer(ctx, filepath.Join(dir, "mo"))
	if err != nil {
		return m, err
	}
	defer s.Close()
	keys, err := NewKeys()
	if err != nil {
		return m, err
	}
	lib := NewLib(s, keys)
	defer lib.Close()
	raw, err := openRaw(dir)
	if err != nil {
		return m, err
	}
	defer raw.db.Close()
	payload := make([]byte, size)
	var moTime, rawTime time.Duration
	for done := 0; done < n; {
		k := min(measureBatch, n-done)
		objs := make([]*Object, 0, k)
		start := time.Now()
		for i := 0; i < k; i++ {
			mo, err := lib.CreateNew(ctx, time.Now().Add(time.Hour), payload)
			if err != nil {
				return m, err
			}
			objs = append(objs, mo.Object())
		}
		moTime += time.Since(start)
		recs := make([][]byte, k)
		toks := make([]Token, k)
		for i, o := range objs {
			recs[i] = encodeRecord(recObject, o.appendTo(nil))
			toks[i] = o.Token()
		}
		start = time.Now()
		for i := range recs {
			if err := raw.put(toks[i][:], recs[i]); err != nil {
				return m, err
			}
		}
		rawTime += time.Since(start)
		done += k
	}
	m.MOPerSec = float64(n) / moTime.Seconds()
	m.RawPerSec = float64(n) / rawTime.Seconds()
	return m, nil
}

// MeasureFetch adopts n objects of size bytes on a home server, then
// FETCHes them over loopback TCP with conc concurrent clients (each
// answer checked against its token and signature, as a server does), and reads the same records from a
// raw bbolt file with conc goroutines.
func MeasureFetch(ctx context.Context, dir string, n, size, conc int) (ThroughputMeasure, error) {
	m := ThroughputMeasure{Ops: n, Size: size}
	s, err := quietServer(ctx, filepath.Join(dir, "mo"))
	if err != nil {
		return m, err
	}
	defer s.Close()
	keys, err := NewKeys()
	if err != nil {
		return m, err
	}
	lib := NewLib(s, keys)
	defer lib.Close()
	payload := make([]byte, size)
	toks := make([]Token, n)
	raw, err := openRaw(dir)
	if err != nil {
		return m, err
	}
	defer raw.db.Close()
	for i := range toks {
		mo, err := lib.CreateNew(ctx, time.Now().Add(time.Hour), payload)
		if err != nil {
			return m, err
		}
		toks[i] = mo.Token()
		if err := raw.put(toks[i][:], encodeRecord(recObject, mo.Object().appendTo(nil))); err != nil {
			return m, err
		}
	}
	p := newPool(func() netip.AddrPort { return netip.AddrPort{} })
	defer p.close()
	home := s.self()
	// run does toks[lo:hi] with conc goroutines and returns the time.
	run := func(lo, hi int, op func(t Token) error) (time.Duration, error) {
		var wg sync.WaitGroup
		errs := make(chan error, conc)
		start := time.Now()
		for w := 0; w < conc; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := lo + w; i < hi; i += conc {
					if err := op(toks[i]); err != nil {
						errs <- err
						return
					}
				}
			}(w)
		}
		wg.Wait()
		el := time.Since(start)
		close(errs)
		return el, <-errs
	}
	fetch := func(t Token) error {
		f, err := p.call(ctx, home, msgFetch, t[:])
		if err != nil {
			return err
		}
		o := new(Object)
		if err := o.UnmarshalBinary(f.body); err != nil {
			return err
		}
		return o.Verify(t)
	}
	get := func(t Token) error {
		v, err := raw.get(t[:])
		if err != nil {
			return err
		}
		_, err = decodeObjectRecord(v)
		return err
	}
	var moTime, rawTime time.Duration
	for lo := 0; lo < n; lo += measureBatch {
		hi := min(n, lo+measureBatch)
		d, err := run(lo, hi, fetch)
		if err != nil {
			return m, err
		}
		moTime += d
		if d, err = run(lo, hi, get); err != nil {
			return m, err
		}
		rawTime += d
	}
	m.MOPerSec = float64(n) / moTime.Seconds()
	m.RawPerSec = float64(n) / rawTime.Seconds()
	return m, nil
}
