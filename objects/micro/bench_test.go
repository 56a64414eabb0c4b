package micro

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

func BenchmarkAdopt(b *testing.B) {
	for _, size := range []int{64, 1 << 10, 16 << 10} {
		b.Run(fmt.Sprintf("size%d", size), func(b *testing.B) {
			m, err := MeasureAdopt(context.Background(), b.TempDir(), max(b.N, 10), size)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(1e9/m.MOPerSec, "ns/op")
			b.ReportMetric(m.MOPerSec, "objs/s")
			b.ReportMetric(m.RawPerSec, "raw-puts/s")
			b.ReportMetric(m.Ratio(), "ratio")
		})
	}
}

func BenchmarkFetch(b *testing.B) {
	for _, size := range []int{64, 1 << 10, 16 << 10} {
		for _, conc := range []int{1, 4} {
			b.Run(fmt.Sprintf("size%d/conc%d", size, conc), func(b *testing.B) {
				m, err := MeasureFetch(context.Background(), b.TempDir(), max(b.N, 10), size, conc)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(1e9/m.MOPerSec, "ns/op")
				b.ReportMetric(m.MOPerSec, "fetches/s")
				b.ReportMetric(m.RawPerSec, "raw-gets/s")
				b.ReportMetric(m.Ratio(), "ratio")
			})
		}
	}
}

func BenchmarkReconcile(b *testing.B) {
	sizes := []int{1e4, 1e5}
	if os.Getenv("LIVEOBJECTS_LONG") != "" {
		sizes = append(sizes, 1e6)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("n%d_d100", n), func(b *testing.B) {
			sa, sb := reconcilePair(n, 100)
			b.ResetTimer()
			var m ReconMeasure
			for i := 0; i < b.N; i++ {
				var err error
				if m, err = measureReconcilePair(context.Background(), sa, sb, n, 100); err != nil {
					b.Fatal(err)
				}
			}
			bytes := m.Stats.BytesSent + m.Stats.BytesReceived
			b.ReportMetric(float64(m.Stats.RoundTrips), "round-trips")
			b.ReportMetric(float64(bytes), "bytes")
			b.ReportMetric(float64(m.FullBytes), "full-bytes")
			b.ReportMetric(float64(bytes)/float64(m.FullBytes), "ratio")
		})
	}
}

// TestReconcileCost checks the cost bound the design promises, in memory
// for 10^4 and 10^5 tokens (10^6 with LIVEOBJECTS_LONG=1).
func TestReconcileCost(t *testing.T) {
	sizes := []int{1e4, 1e5}
	if os.Getenv("LIVEOBJECTS_LONG") != "" {
		sizes = append(sizes, 1e6)
	}
	for _, n := range sizes {
		m, err := MeasureReconcile(context.Background(), n, 100)
		if err != nil {
			t.Fatal(err)
		}
		bytes := m.Stats.BytesSent + m.Stats.BytesReceived
		t.Logf("n=%d diffs=100: %d round trips, %d bytes, full exchange %d bytes (%.2f%%), %v", n, m.Stats.RoundTrips, bytes, m.FullBytes, 100*float64(bytes)/float64(m.FullBytes), m.Elapsed)
		if m.Stats.RoundTrips > 5 || float64(bytes) > 0.1*float64(m.FullBytes) {
			t.Fatalf("reconciliation too costly: %+v", m)
		}
	}
}

// TestAssentLargeCluster reconciles two servers' copies of a cluster of
// 10^4 members (10^5 too with LIVEOBJECTS_LONG=1) that differ in 100, over
// ASSENT on loopback.
func TestAssentLargeCluster(t *testing.T) {
	sizes := []int{1e4}
	if os.Getenv("LIVEOBJECTS_LONG") != "" {
		sizes = append(sizes, 1e5)
	}
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) { testAssentLarge(t, n) })
	}
}

func testAssentLarge(t *testing.T, n int) {
	ctx := tctx(t)
	keys := mustKeys(t)
	a, b := startServer(t, nil), startServer(t, nil)
	la, lb := newLib(t, a, keys), newLib(t, b, keys)
	m, _ := la.CreateNew(ctx, time.Now().Add(time.Hour), []byte("big"))
	if _, err := lb.Get(ctx, m.Token()); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Server{a, b} {
		if err := x.Replicate(ctx, m.Token(), Policy{Kind: Flooding}); err != nil {
			t.Fatal(err)
		}
	}
	toks := randTokens(n+50, time.Now().Add(time.Hour).UnixMilli())
	for i := range toks {
		toks[i][26] = 1 // a valid port
	}
	var common, onlyA, onlyB []Entry
	for i, tk := range toks {
		e := NewEntry(keys, m.Token(), tk)
		switch {
		case i < n-50:
			common = append(common, e)
		case i < n:
			onlyA = append(onlyA, e)
		default:
			onlyB = append(onlyB, e)
		}
	}
	// Straight into the stores, so that no flood runs before the measure.
	a.st.addEntries(m.Token(), append(append([]Entry{}, common...), onlyA...))
	b.st.addEntries(m.Token(), append(append([]Entry{}, common...), onlyB...))
	a.notify(m.Token())
	b.notify(m.Token())
	start := time.Now()
	st, err := a.assentStats(ctx, b.PeerAddr(), m.Token(), m.Token())
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if a.st.clusterLen(m.Token()) != n+50 || b.st.clusterLen(m.Token()) != n+50 {
		t.Fatalf("after assent: a=%d b=%d", a.st.clusterLen(m.Token()), b.st.clusterLen(m.Token()))
	}
	full := int64(n * entrySize)
	t.Logf("assent %d members, 100 differences: %+v in %v; full exchange %d bytes", n, st, el, full)
	if st.RoundTrips > 4 || st.BytesSent+st.BytesReceived > full/10 {
		t.Fatalf("assent too costly: %+v", st)
	}
}
