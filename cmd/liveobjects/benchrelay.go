package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"time"

	"github.com/liveobjects/liveobjects/transport/relay/relaybench"
)

var benchRelayOpts struct {
	events, window, cpMiB, reps int
	noDurable                   bool
}

func init() {
	register(&command{
		Name:    "bench relay",
		Summary: "measure the relay: 1 publisher to 1 and 4 subscribers, memory and durable log",
		Help: `Runs an in-process relay on loopback and measures, for 16 B, 128 B and
1 KiB events and 1 and 4 subscribers: delivered events per second (summed
over subscribers), MB/s and the p50/p99 publish-to-deliver latency, with
the relay's log in memory and in its durable bbolt log (group commit, each
publish acknowledged once it is on disk). Then it joins a channel whose
state is a 64 MiB checkpoint and compares with copying 64 MiB over
loopback TCP.

The comparison with a NATS server (core pub/sub against the in-memory
relay, JetStream file storage against the durable relay) lives in a
separate module so that this binary does not depend on NATS; run it from
the source tree:

  cd transport/relay/natsbench && go run .

Progress goes to stderr, the table to stdout.`,
		Flags: func(fs *flag.FlagSet) {
			fs.IntVar(&benchRelayOpts.events, "events", 100000, "events per case")
			fs.IntVar(&benchRelayOpts.window, "window", 4096, "events in flight (published, not yet delivered everywhere)")
			fs.IntVar(&benchRelayOpts.cpMiB, "checkpoint", 64, "checkpoint size for the join measurement, MiB (0: skip)")
			fs.BoolVar(&benchRelayOpts.noDurable, "memory-only", false, "skip the durable log")
			fs.IntVar(&benchRelayOpts.reps, "reps", 3, "runs per case (the median by msgs/s is shown)")
		},
		Run: runBenchRelay,
	})
}

func runBenchRelay(ctx context.Context, args []string) error {
	if len(args) != 0 {
		return usagef("bench relay takes no arguments")
	}
	o := benchRelayOpts
	if o.events < 1 || o.window < 1 {
		return usagef("--events and --window must be positive")
	}
	systems := []relaybench.System{&relaybench.RelaySystem{}}
	if !o.noDurable {
		systems = append(systems, &relaybench.RelaySystem{Durable: true})
	}
	if o.reps < 1 {
		return usagef("--reps must be at least 1")
	}
	var results []relaybench.Result
	for _, c := range relaybench.Cases {
		runs := make([][]relaybench.Result, len(systems))
		for rep := 0; rep < o.reps; rep++ {
			for i, sys := range systems {
				fmt.Fprintf(os.Stderr, "bench relay: %s, %d subscriber(s), %d B events, run %d of %d...\n", sys.Name(), c.Subs, c.Size, rep+1, o.reps)
				r, err := relaybench.Run(ctx, sys, c, relaybench.Options{Events: o.events, Window: o.window})
				if err != nil {
					return err
				}
				runs[i] = append(runs[i], r)
			}
		}
		for _, rs := range runs {
			sort.Slice(rs, func(a, b int) bool { return rs[a].MsgsPerS < rs[b].MsgsPerS })
			results = append(results, rs[len(rs)/2])
		}
	}
	host, _ := os.Hostname()
	fmt.Printf("relay benchmark, %s, %s, %d CPUs, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), runtime.Version())
	fmt.Print(relaybench.Table(results, nil))
	if o.cpMiB > 0 {
		n := o.cpMiB << 20
		fmt.Fprintf(os.Stderr, "bench relay: copying %d MiB over loopback TCP...\n", o.cpMiB)
		raw, err := relaybench.RawCopy(ctx, n)
		if err != nil {
			return err
		}
		fmt.Printf("\njoin with a %d MiB checkpoint vs copying it over loopback TCP (%v):\n", o.cpMiB, raw.Round(time.Millisecond))
		for _, durable := range []bool{false, true} {
			if durable && o.noDurable {
				continue
			}
			fmt.Fprintf(os.Stderr, "bench relay: joining with a %d MiB checkpoint (durable=%v)...\n", o.cpMiB, durable)
			d, err := relaybench.JoinCheckpoint(ctx, durable, n)
			if err != nil {
				return err
			}
			fmt.Printf("  durable=%-5v join %v  ratio x%.1f\n", durable, d.Round(time.Millisecond), float64(d)/float64(raw))
		}
	}
	fmt.Printf("\nfor the NATS comparison: cd transport/relay/natsbench && go run .\n")
	return nil
}
