package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"time"

	"github.com/liveobjects/liveobjects/transport/relay/relaybench"
)

func main() {
	events := flag.Int("events", 200000, "events per case")
	window := flag.Int("window", 4096, "events in flight")
	cpMiB := flag.Int("checkpoint", 64, "checkpoint size for the join measurement, MiB (0: skip)")
	reps := flag.Int("reps", 3, "runs per case and system (the median is kept)")
	jsSync := flag.Bool("js-sync", false, "also run JetStream with sync_always (fsync per message: very slow)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	results, text, err := compare(ctx, relaybench.Options{Events: *events, Window: *window}, *cpMiB<<20, *reps, *jsSync, func(s string) { fmt.Fprintln(os.Stderr, s) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsbench:", err)
		os.Exit(1)
	}
	_ = results
	fmt.Printf("relay vs nats-server, %s, GOMAXPROCS %d, %s\n\n", time.Now().UTC().Format("2006-01-02"), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Print(text)
}

// pairs maps each relay system to its peer.
var pairs = map[string]string{
	"relay-mem":            "nats-core",
	"relay-durable":        "nats-js-file",
	"relay-durable-nosync": "nats-js-file",
}

// compare runs every case on every system (reps times, interleaved, the
// median by msgs/s kept) and renders the table.
func compare(ctx context.Context, o relaybench.Options, cpBytes int, reps int, jsSync bool, progress func(string)) ([]relaybench.Result, string, error) {
	var lg *slog.Logger
	if os.Getenv("LIVEOBJECTS_BENCH_LOG") != "" {
		lg = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	systems := []relaybench.System{
		&relaybench.RelaySystem{Logger: lg},
		&natsSystem{},
		&relaybench.RelaySystem{Durable: true, Logger: lg},
		&natsSystem{jetStream: true},
	}
	if jsSync {
		systems = append(systems, &natsSystem{jetStream: true, syncAlways: true})
	}
	var results []relaybench.Result
	for _, c := range relaybench.Cases {
		runs := make([][]relaybench.Result, len(systems))
		for rep := 0; rep < reps; rep++ {
			for i, sys := range systems {
				r, err := relaybench.Run(ctx, sys, c, o)
				if err != nil {
					return nil, "", err
				}
				progress(relaybench.Row(r))
				runs[i] = append(runs[i], r)
			}
		}
		for _, rs := range runs {
			sort.Slice(rs, func(a, b int) bool { return rs[a].MsgsPerS < rs[b].MsgsPerS })
			results = append(results, rs[len(rs)/2])
		}
	}
	text := relaybench.Table(results, pairs)
	if cpBytes > 0 {
		raw, err := relaybench.RawCopy(ctx, cpBytes)
		if err != nil {
			return nil, "", err
		}
		text += fmt.Sprintf("\njoin with a %d MiB checkpoint vs copying it over loopback TCP (%v):\n", cpBytes>>20, raw.Round(time.Millisecond))
		for _, durable := range []bool{false, true} {
			d, err := relaybench.JoinCheckpoint(ctx, durable, cpBytes)
			if err != nil {
				return nil, "", err
			}
			text += fmt.Sprintf("  durable=%-5v join %v  ratio x%.1f\n", durable, d.Round(time.Millisecond), float64(d)/float64(raw))
		}
	}
	return results, text, nil
}
