package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/liveobjects/liveobjects/transport/relay/relaybench"
)

// BenchmarkCompare runs each case on the relay and on its NATS peer and
// reports msgs/s, MB/s, p50/p99 and the ratios.
func BenchmarkCompare(b *testing.B) {
	type pair struct {
		relay relaybench.System
		peer  relaybench.System
	}
	ps := []pair{
		{&relaybench.RelaySystem{}, &natsSystem{}},
		{&relaybench.RelaySystem{Durable: true}, &natsSystem{jetStream: true}},
	}
	for _, p := range ps {
		for _, c := range relaybench.Cases {
			b.Run(fmt.Sprintf("%s/subs=%d/size=%d", p.relay.Name(), c.Subs, c.Size), func(b *testing.B) {
				o := relaybench.Options{Events: 100000}
				var rr, pr relaybench.Result
				for i := 0; i < b.N; i++ {
					var err error
					if rr, err = relaybench.Run(context.Background(), p.relay, c, o); err != nil {
						b.Fatal(err)
					}
					if pr, err = relaybench.Run(context.Background(), p.peer, c, o); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(int64(c.Size * c.Subs))
				b.ReportMetric(rr.MsgsPerS, "msgs/s")
				b.ReportMetric(rr.MBPerS, "MB/s")
				b.ReportMetric(float64(rr.P50.Microseconds()), "p50-µs")
				b.ReportMetric(float64(rr.P99.Microseconds()), "p99-µs")
				b.ReportMetric(pr.MsgsPerS, "peer-msgs/s")
				b.ReportMetric(rr.MsgsPerS/pr.MsgsPerS, "ratio-msgs/s")
				b.ReportMetric(float64(rr.P99)/float64(max(pr.P99, 1)), "ratio-p99")
			})
		}
	}
}
