package relaybench

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkRelay runs the matrix on the relay (memory and durable) and
// reports msgs/s, MB/s and latency; the ratio metric compares with a raw
// TCP copy of the same bytes (the ceiling of any relay on this machine).
func BenchmarkRelay(b *testing.B) {
	for _, sys := range []System{&RelaySystem{}, &RelaySystem{Durable: true}} {
		for _, c := range Cases {
			b.Run(fmt.Sprintf("%s/subs=%d/size=%d", sys.Name(), c.Subs, c.Size), func(b *testing.B) {
				var r Result
				for i := 0; i < b.N; i++ {
					var err error
					if r, err = Run(context.Background(), sys, c, Options{Events: 100000}); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(int64(c.Size * c.Subs))
				b.ReportMetric(r.MsgsPerS, "msgs/s")
				b.ReportMetric(r.MBPerS, "MB/s")
				b.ReportMetric(float64(r.P50.Microseconds()), "p50-µs")
				b.ReportMetric(float64(r.P99.Microseconds()), "p99-µs")
				raw, err := RawCopy(context.Background(), 100000*c.Size)
				if err != nil {
					b.Fatal(err)
				}
				rawRate := 100000 / raw.Seconds()
				b.ReportMetric(r.MsgsPerS/float64(c.Subs)/rawRate, "ratio-vs-rawtcp")
			})
		}
	}
}

// BenchmarkJoin64MiB joins with a 64 MiB checkpoint and reports the ratio
// to copying 64 MiB over loopback TCP.
func BenchmarkJoin64MiB(b *testing.B) {
	const n = 64 << 20
	for _, durable := range []bool{false, true} {
		b.Run(fmt.Sprintf("durable=%v", durable), func(b *testing.B) {
			var join, raw time.Duration
			for i := 0; i < b.N; i++ {
				d, err := JoinCheckpoint(context.Background(), durable, n)
				if err != nil {
					b.Fatal(err)
				}
				r, err := RawCopy(context.Background(), n)
				if err != nil {
					b.Fatal(err)
				}
				join += d
				raw += r
			}
			b.SetBytes(n)
			b.ReportMetric(float64(join.Milliseconds())/float64(b.N), "join-ms")
			b.ReportMetric(float64(raw.Milliseconds())/float64(b.N), "rawtcp-ms")
			b.ReportMetric(float64(join)/float64(raw), "ratio")
		})
	}
}
