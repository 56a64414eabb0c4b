package qsmbench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/cmd/liveobjects/clibin"
	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/qsm"
	"github.com/liveobjects/liveobjects/transport/qsm/internal/udpgso"
	"github.com/liveobjects/liveobjects/transport/qsm/qsmlab"
)

func smallConfig() qsm.Config {
	cfg := qsm.DefaultConfig()
	cfg.Multicast = qsm.DefaultConfig().Multicast
	return cfg
}

// TestLoopbackHarness runs a small loopback measurement, with clients
// dialing their services and with clients attached to them in process
// (whose handlers borrow payloads, or own them): every QSM row delivers
// everything, and the table names each measurement.
func TestLoopbackHarness(t *testing.T) {
	for _, v := range []struct {
		attach, own bool
		mode        string
	}{
		{false, false, "loopback"},
		{true, false, "loopback, clients attached"},
		{true, true, "loopback, clients attached, handlers own payloads"},
	} {
		t.Run(fmt.Sprintf("attach=%t,own=%t", v.attach, v.own), func(t *testing.T) { testLoopbackHarness(t, v.attach, v.own, v.mode) })
	}
}

func testLoopbackHarness(t *testing.T, attach, own bool, mode string) {
	res, err := RunLoopback(context.Background(), Options{
		Receivers: 2, Count: 3000, Size: 256, LossPercent: 5, Groups: []int{1, 20}, Config: smallConfig(), Repeat: 1,
		Attach: attach, OwnData: own,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != mode {
		t.Fatalf("mode %q, want %q", res.Mode, mode)
	}
	// Raw multicast, with the kernel's offload too where QSM uses it, two
	// group counts, the lossy and the paced measurement.
	raws := 1
	if udpgso.Available {
		raws = 2
	}
	if len(res.Rows) != raws+4 {
		t.Fatalf("got %d rows:\n%s", len(res.Rows), res.Table())
	}
	for _, r := range res.Rows[raws:] {
		if r.Lost != 0 || r.Goodput <= 0 {
			t.Fatalf("%s: lost %d, goodput %v\n%s", r.Name, r.Lost, r.Goodput, res.Table())
		}
	}
	for _, r := range res.Rows[:raws] {
		if !strings.HasPrefix(r.Name, "raw UDP multicast") || r.Goodput <= 0 {
			t.Fatalf("%s: goodput %v\n%s", r.Name, r.Goodput, res.Table())
		}
	}
	// QSM is held to the raw row with the same offload.
	if want := res.Rows[raws-1].Goodput; res.Rows[raws].Of == "" || res.Rows[raws].Ratio != res.Rows[raws].Goodput/want {
		t.Fatalf("%s: ratio %.3f of %q, want its goodput over %s's\n%s", res.Rows[raws].Name, res.Rows[raws].Ratio, res.Rows[raws].Of, res.Rows[raws-1].Name, res.Table())
	}
	t.Logf("\n%s", res.Table())
}

// BenchmarkQSM runs the whole suite once (use -benchtime=1x) on a LAN of
// network namespaces when root, else on loopback, and reports the ratios.
// LIVEOBJECTS_QSM_BENCH_COUNT overrides the events per measurement.
func BenchmarkQSM(b *testing.B) {
	o := Options{Config: qsm.DefaultConfig(), Progress: func(f string, a ...any) { b.Logf(f, a...) }}
	if s := os.Getenv("LIVEOBJECTS_QSM_BENCH_COUNT"); s != "" {
		fmt.Sscan(s, &o.Count)
	}
	var res *Result
	var err error
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		if qsmlab.Available() == nil && os.Getenv("LIVEOBJECTS_QSM_BENCH_MODE") != "loopback" {
			o.Binary = clibin.Path(b)
			o.Wire = true
			b.ResetTimer()
			res, err = RunNetns(ctx, o)
		} else {
			res, err = RunLoopback(ctx, o)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("\n%s", res.Table())
	for i, r := range res.Rows {
		key := fmt.Sprintf("row%d", i)
		b.ReportMetric(r.Goodput/1e6, key+"-MB/s")
		if r.Of != "" {
			b.ReportMetric(r.Ratio, key+"-ratio")
		}
		b.ReportMetric(float64(r.CPUPerMsg)/float64(time.Microsecond), key+"-cpu-us/msg")
	}
}

// TestGroupCounterFIFO: the benchmark's handler counts every event and
// flags a sequence number that does not follow its sender's last, for
// the first sender and for others, and a payload of the wrong size.
func TestGroupCounterFIFO(t *testing.T) {
	var total, bad atomic.Int64
	g := &groupCounter{total: &total, bad: &bad}
	for _, ev := range []transport.Event{
		{Sender: "a", Seq: 5}, {Sender: "a", Seq: 6}, {Sender: "b", Seq: 1}, {Sender: "a", Seq: 7},
		{Sender: "b", Seq: 2}, {Sender: "b", Seq: 4}, {Sender: "a", Seq: 7},
		{Sender: "a", Seq: 8, Data: []byte("x")},
	} {
		g.Deliver(ev)
	}
	if total.Load() != 8 || bad.Load() != 3 {
		t.Fatalf("counted %d events with %d flagged; want 8 with 3 (b 2 -> 4, a 7 -> 7, a 1-byte payload)", total.Load(), bad.Load())
	}
}

// TestRoundOrder: over n rounds each group count is measured once in each
// place of a round, and every round measures each count once.
func TestRoundOrder(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5} {
		places := make([]map[int]bool, n)
		for p := range places {
			places[p] = map[int]bool{}
		}
		for k := 1; k <= n; k++ {
			order := roundOrder(n, k)
			seen := map[int]bool{}
			for p, gi := range order {
				if gi < 0 || gi >= n || seen[gi] {
					t.Fatalf("n=%d round %d: order %v is not a permutation", n, k, order)
				}
				seen[gi] = true
				places[p][gi] = true
			}
		}
		for p, got := range places {
			if len(got) != n {
				t.Fatalf("n=%d: place %d held only the group counts %v over %d rounds", n, p, got, n)
			}
		}
	}
	if got := roundOrder(3, 1); got[0] != 0 || got[1] != 1 || got[2] != 2 {
		t.Fatalf("the first round measures %v, want the list's order", got)
	}
}

// TestRoundsTurnGroupOrder runs two rounds on loopback and reads the
// order of the measurements from the progress lines: the second round
// starts with the second group count, and each ratio still pairs the
// measurements of one round.
func TestRoundsTurnGroupOrder(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	res, err := RunLoopback(context.Background(), Options{
		Receivers: 1, Count: 2000, Size: 256, LossPercent: -1, Groups: []int{1, 20}, Config: smallConfig(), Repeat: 2, Attach: true,
		Progress: func(f string, a ...any) {
			mu.Lock()
			lines = append(lines, fmt.Sprintf(f, a...))
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "round "):
			order = append(order, strings.Fields(l)[1])
		case strings.HasPrefix(l, "  QSM, 1 group(s)"):
			order = append(order, "1")
		case strings.HasPrefix(l, "  QSM, 20 group(s)"):
			order = append(order, "20")
		}
	}
	if got, want := strings.Join(order, " "), "1 1 20 2 20 1"; got != want {
		t.Fatalf("measured in the order %q, want %q (round, its group counts)\n%s", got, want, strings.Join(lines, "\n"))
	}
	for _, r := range res.Rows {
		if strings.HasPrefix(r.Name, "QSM, 20") && len(r.Pairs) != 2 {
			t.Fatalf("%s: %d ratios, want one per round\n%s", r.Name, len(r.Pairs), res.Table())
		}
	}
}
