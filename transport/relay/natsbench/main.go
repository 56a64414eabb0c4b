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
	"strings"
	"time"

	"github.com/liveobjects/liveobjects/transport/relay/relaybench"
)

func main() {
	events := flag.Int("events", 200000, "events per case")
	window := flag.Int("window", 4096, "events in flight")
	cpMiB := flag.Int("checkpoint", 64, "checkpoint size for the join measurement, MiB (0: skip)")
	reps := flag.Int("reps", 3, "runs per case and system (the median is kept)")
	jsSync := flag.Bool("js-sync", false, "also run JetStream with sync_always (fsync per message: very slow)")
	only := flag.String("cases", "", "comma-separated SUBSxSIZE cases to run, e.g. 1x16,1x1024 (default: all)")
	memOnly := flag.Bool("mem", false, "only the in-memory relay against NATS core")
	flag.Parse()
	cases, err := pickCases(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	results, text, err := compare(ctx, cases, relaybench.Options{Events: *events, Window: *window}, *cpMiB<<20, *reps, *jsSync, *memOnly, func(s string) { fmt.Fprintln(os.Stderr, s) })
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
func compare(ctx context.Context, cases []relaybench.Case, o relaybench.Options, cpBytes int, reps int, jsSync, memOnly bool, progress func(string)) ([]relaybench.Result, string, error) {
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
	if memOnly {
		systems = systems[:2]
	} else if jsSync {
		systems = append(systems, &natsSystem{jetStream: true, syncAlways: true})
	}
	var results []relaybench.Result
	var paired strings.Builder
	for _, c := range cases {
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
		paired.WriteString(pairedRatios(systems, runs))
		for _, rs := range runs {
			sort.Slice(rs, func(a, b int) bool { return rs[a].MsgsPerS < rs[b].MsgsPerS })
			results = append(results, rs[len(rs)/2])
		}
	}
	text := relaybench.Table(results, pairs)
	if reps > 1 {
		text += "\nrun by run (each relay run against the peer run right after it):\n" + paired.String()
	}
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

// pickCases parses -cases ("1x16,4x1024"); empty means every case.
func pickCases(spec string) ([]relaybench.Case, error) {
	if spec == "" {
		return relaybench.Cases, nil
	}
	var cases []relaybench.Case
	for _, f := range strings.Split(spec, ",") {
		var c relaybench.Case
		if _, err := fmt.Sscanf(f, "%dx%d", &c.Subs, &c.Size); err != nil || c.Subs < 1 || c.Size < 16 {
			return nil, fmt.Errorf("-cases: %q is not SUBSxSIZE with at least 1 subscriber and 16 bytes (e.g. 1x128)", f)
		}
		cases = append(cases, c)
	}
	return cases, nil
}

// pairedRatios compares each relay run with the peer run made right after
// it: runs next to each other share the machine's state, so their ratio
// varies less than the ratio of the two medians. It returns one line per
// relay system with a peer: the median ratio, its range, and in how many
// runs the relay delivered more.
func pairedRatios(systems []relaybench.System, runs [][]relaybench.Result) string {
	var b strings.Builder
	for i, sys := range systems {
		peer, ok := pairs[sys.Name()]
		if !ok {
			continue
		}
		for j, other := range systems {
			if other.Name() != peer || len(runs[j]) != len(runs[i]) {
				continue
			}
			ratios := make([]float64, len(runs[i]))
			ahead := 0
			for k := range runs[i] {
				ratios[k] = runs[i][k].MsgsPerS / runs[j][k].MsgsPerS
				if ratios[k] > 1 {
					ahead++
				}
			}
			sort.Float64s(ratios)
			c := runs[i][0].Case
			fmt.Fprintf(&b, "%-18s vs %-12s subs %d size %5d: msgs/s x%.2f (x%.2f-x%.2f), more in %d of %d runs\n",
				sys.Name(), peer, c.Subs, c.Size, ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1], ahead, len(ratios))
		}
	}
	return b.String()
}
