package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/liveobjects/liveobjects/objects/micro"
)

var benchMOOpts struct {
	sizes        string
	diffs        int
	ops, payload int
	conc         int
	dir          string
}

func init() {
	register(&command{
		Name:    "bench mo",
		Summary: "measure the micro-object system against raw bbolt and full cluster exchange",
		Help: `Measures, in one run:
  create+adopt   objects/s created, sealed, signed and stored by an MO server,
                 against raw bbolt puts of the same records (one transaction each)
  fetch          FETCH requests/s over loopback TCP (answers checked against
                 their tokens), against raw bbolt gets of the same records
  reconcile      round trips and bytes to harmonize two clusters of N tokens
                 that differ in --diffs tokens, against sending a whole cluster
Progress goes to stderr, the table to stdout.`,
		Flags: func(fs *flag.FlagSet) {
			o := &benchMOOpts
			fs.StringVar(&o.sizes, "sizes", "10000,100000,1000000", "cluster sizes for the reconciliation, comma-separated")
			fs.IntVar(&o.diffs, "diffs", 100, "differences between the two clusters")
			fs.IntVar(&o.ops, "ops", 2000, "objects created and fetched")
			fs.IntVar(&o.payload, "payload", 1024, "payload size in bytes")
			fs.IntVar(&o.conc, "conc", 4, "concurrent fetchers (and raw readers)")
			fs.StringVar(&o.dir, "dir", "", "directory for the bbolt files (default: a temporary directory, removed after)")
		},
		Run: runBenchMO,
	})
}

func runBenchMO(ctx context.Context, args []string) error {
	o := benchMOOpts
	if len(args) != 0 {
		return usagef("bench mo takes no arguments")
	}
	var sizes []int
	for _, s := range strings.Split(o.sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < o.diffs || n <= 0 {
			return usagef("--sizes: %q is not a size of at least --diffs (%d)", s, o.diffs)
		}
		sizes = append(sizes, n)
	}
	if o.ops <= 0 || o.payload < 0 || o.conc <= 0 || o.diffs < 2 {
		return usagef("--ops and --conc must be positive, --diffs at least 2")
	}
	if o.payload > micro.MaxPlain {
		return usagef("--payload: %d bytes is more than a micro object holds (%d)", o.payload, micro.MaxPlain)
	}
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "liveobjects-bench-mo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	fmt.Fprintf(os.Stderr, "create+adopt %d objects of %d bytes...\n", o.ops, o.payload)
	ad, err := micro.MeasureAdopt(ctx, dir+"/adopt", o.ops, o.payload)
	if err != nil {
		return fmt.Errorf("adopt: %w", err)
	}
	fmt.Fprintf(os.Stderr, "fetch %d objects, %d concurrent...\n", o.ops, o.conc)
	fe, err := micro.MeasureFetch(ctx, dir+"/fetch", o.ops, o.payload, o.conc)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	fmt.Printf("%-28s %12s %12s %8s\n", "operation", "MO ops/s", "raw ops/s", "ratio")
	fmt.Printf("%-28s %12.0f %12.0f %8.3f\n", fmt.Sprintf("create+adopt (%d B)", o.payload), ad.MOPerSec, ad.RawPerSec, ad.Ratio())
	fmt.Printf("%-28s %12.0f %12.0f %8.3f\n", fmt.Sprintf("fetch (%d B, %d conc)", o.payload, o.conc), fe.MOPerSec, fe.RawPerSec, fe.Ratio())
	fmt.Println()
	fmt.Printf("%-10s %6s %12s %14s %16s %8s %10s\n", "tokens", "diffs", "round trips", "bytes", "full exchange", "ratio", "time")
	for _, n := range sizes {
		fmt.Fprintf(os.Stderr, "reconcile %d tokens, %d differences...\n", n, o.diffs)
		m, err := micro.MeasureReconcile(ctx, n, o.diffs)
		if err != nil {
			return fmt.Errorf("reconcile %d: %w", n, err)
		}
		b := m.Stats.BytesSent + m.Stats.BytesReceived
		fmt.Printf("%-10d %6d %12d %14d %16d %7.2f%% %10s\n", n, o.diffs, m.Stats.RoundTrips, b, m.FullBytes, 100*float64(b)/float64(m.FullBytes), m.Elapsed.Round(1e6))
	}
	return nil
}
