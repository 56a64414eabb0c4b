package qsmbench

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/liveobjects/liveobjects/cmd/liveobjects/clibin"
	"github.com/liveobjects/liveobjects/transport/qsm/internal/udpgso"
	"github.com/liveobjects/liveobjects/transport/qsm/qsmlab"
)

// TestNetnsHarness runs a small measurement on a LAN of namespaces with
// wire-like links, once with the services as processes of their own and
// once with them in this process, each in its node's namespace, and
// clients attached: the raw receivers run as `liveobjects bench
// udp-receive` processes in the nodes' namespaces and report what they
// got, every QSM row delivers everything, and each ratio is the median of
// its rounds' ratios.
func TestNetnsHarness(t *testing.T) {
	if err := qsmlab.Available(); err != nil {
		t.Skipf("needs root, ip and nft: %v", err)
	}
	bin := clibin.Path(t)
	for _, attach := range []bool{false, true} {
		t.Run(fmt.Sprintf("attach=%t", attach), func(t *testing.T) { testNetnsHarness(t, bin, attach) })
	}
}

func testNetnsHarness(t *testing.T, bin string, attach bool) {
	const rounds = 2 // the median of two ratios is their mean
	res, err := RunNetns(context.Background(), Options{
		Receivers: 2, Count: 4000, Size: 1024, LossPercent: 5, Groups: []int{1, 20}, Config: smallConfig(),
		Repeat: rounds, Binary: bin, Wire: true, Attach: attach,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", res.Table())
	if want := map[bool]string{false: "netns", true: "netns, clients attached"}[attach]; res.Mode != want {
		t.Fatalf("mode %q, want %q", res.Mode, want)
	}
	raws := 1
	if udpgso.Available {
		raws = 2
	}
	if len(res.Rows) != raws+4 {
		t.Fatalf("got %d rows, want %d", len(res.Rows), raws+4)
	}
	for _, r := range res.Rows[:raws] {
		// The receivers' processes reported what they got.
		if !strings.HasPrefix(r.Name, "raw UDP multicast") || r.Goodput <= 0 || r.Lost >= 4000 || r.CPUPerMsg <= 0 {
			t.Fatalf("%s: goodput %v, lost %d, CPU/msg %v", r.Name, r.Goodput, r.Lost, r.CPUPerMsg)
		}
	}
	for _, r := range res.Rows[raws : raws+3] {
		if r.Lost != 0 || r.Goodput <= 0 {
			t.Fatalf("%s: lost %d, goodput %v", r.Name, r.Lost, r.Goodput)
		}
		if len(r.Pairs) != rounds {
			t.Fatalf("%s: %d round ratios, want %d", r.Name, len(r.Pairs), rounds)
		}
		s := slices.Clone(r.Pairs)
		sort.Float64s(s)
		if r.Ratio != (s[0]+s[1])/2 {
			t.Fatalf("%s: ratio %v is not the median of %v", r.Name, r.Ratio, r.Pairs)
		}
	}
	// 5% of 4,000 events lost at each of two receivers, about 400 in all,
	// and every one delivered: each was forwarded by a peer or sent again
	// by the sender.
	if r := res.Rows[raws+2]; r.Forwarded+r.Resent < 200 {
		t.Fatalf("%s: %d messages forwarded and %d sent again, for about 400 lost", r.Name, r.Forwarded, r.Resent)
	}
}

// TestNetnsLinkRate: with LinkRate, raw multicast and QSM alike cross the
// links no faster than the cap, and QSM still delivers everything. With
// loss on a link that the sender saturates, repair stays what the loss
// asks for: the data waiting at the sender's device is bounded, so the
// token ring does not fall behind it (with the sender's socket holding
// megabytes, each token waited behind them, rounds timed out and the
// receivers forwarded the same messages again and again: 34-50 messages
// forwarded per 100 events per receiver instead of about 5).
func TestNetnsLinkRate(t *testing.T) {
	if err := qsmlab.Available(); err != nil {
		t.Skipf("needs root, ip and nft: %v", err)
	}
	const rate = 80e6 // bits per second: 10 MB/s
	const receivers, count = 2, 20000
	res, err := RunNetns(context.Background(), Options{
		Receivers: receivers, Count: count, Size: 1024, LossPercent: 5, Groups: []int{1}, Config: smallConfig(),
		Repeat: 1, Binary: clibin.Path(t), Wire: true, Attach: true, LinkRate: rate,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", res.Table())
	if want := "netns, clients attached, links capped at 80 Mbit/s"; res.Mode != want {
		t.Fatalf("mode %q, want %q", res.Mode, want)
	}
	for _, r := range res.Rows {
		// Headers take a share of the wire, so the payload's goodput stays
		// below the cap; a tenth is left for the bucket's burst.
		if r.Goodput <= 0 || r.Goodput > 1.1*rate/8 {
			t.Fatalf("%s: goodput %.1f MB/s through links capped at %.0f MB/s", r.Name, r.Goodput/1e6, rate/8/1e6)
		}
		if strings.HasPrefix(r.Name, "QSM") && r.Lost != 0 {
			t.Fatalf("%s: lost %d", r.Name, r.Lost)
		}
	}
	lossy := res.Rows[len(res.Rows)-2]
	if !strings.Contains(lossy.Name, "5% loss at every receiver") {
		t.Fatalf("row %q is not the lossy measurement", lossy.Name)
	}
	// 5% lost at each receiver is about 5.3 repairs per 100 events each
	// (a forward can be lost too); allow twice that.
	per100 := float64(lossy.Forwarded+lossy.Resent) * 100 / (receivers * count)
	t.Logf("%.1f messages forwarded or sent again per 100 events per receiver", per100)
	if per100 > 10.5 {
		t.Fatalf("%s: %.1f messages forwarded or sent again per 100 events per receiver, for 5%% loss", lossy.Name, per100)
	}
}
