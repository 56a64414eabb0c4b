package relaybench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// System is a publish/subscribe system under test.
type System interface {
	// Name is shown in tables ("relay-mem", "nats-core", ...).
	Name() string
	// Open makes one publisher and subs subscribers on a fresh channel;
	// deliver is called for every event each subscriber receives (from
	// the subscriber's own goroutine; it must be fast).
	Open(ctx context.Context, subs int, deliver func(sub int, data []byte)) (Publisher, error)
}

// Publisher publishes without waiting for the whole round trip.
type Publisher interface {
	// Publish sends one event; it may return before the event is
	// acknowledged. It must not keep data after returning.
	Publish(ctx context.Context, data []byte) error
	// Close releases the publisher and the subscribers.
	Close() error
}

// Case is one cell of the matrix.
type Case struct {
	Subs int
	Size int
}

// Cases is the default matrix: 1 publisher to 1 and 4 subscribers, 16 B,
// 128 B and 1 KiB events.
var Cases = []Case{{1, 16}, {1, 128}, {1, 1024}, {4, 16}, {4, 128}, {4, 1024}}

// Result is one measured cell.
type Result struct {
	System   string
	Case     Case
	Events   int // published
	Elapsed  time.Duration
	MsgsPerS float64 // deliveries per second, summed over subscribers
	MBPerS   float64
	P50, P99 time.Duration
}

// Options tune a run.
type Options struct {
	// Events per case (default 200000).
	Events int
	// Window bounds events in flight (default 4096).
	Window int
	// Duration, when set, stops a case after this long even if Events
	// were not all published.
	Duration time.Duration
	// Warmup events are sent and delivered before measuring (default
	// Events/10).
	Warmup int
}

func (o *Options) defaults() {
	if o.Events <= 0 {
		o.Events = 200000
	}
	if o.Window <= 0 {
		o.Window = 4096
	}
	if o.Warmup <= 0 {
		o.Warmup = o.Events / 10
	}
}

// Run measures one case.
func Run(ctx context.Context, sys System, c Case, o Options) (Result, error) {
	o.defaults()
	if c.Size < 16 {
		return Result{}, errors.New("relaybench: events must be at least 16 bytes (they carry a timestamp and an index)")
	}
	delivered := make([]atomic.Int64, c.Subs)
	lat := make([][]time.Duration, c.Subs)
	for i := range lat {
		lat[i] = make([]time.Duration, 0, o.Events+o.Warmup)
	}
	var bad atomic.Int64
	base := time.Now()
	deliver := func(sub int, data []byte) {
		now := time.Since(base)
		if len(data) < 16 {
			bad.Add(1)
			return
		}
		sent := time.Duration(binary.LittleEndian.Uint64(data))
		idx := int64(binary.LittleEndian.Uint64(data[8:]))
		if idx != delivered[sub].Load() {
			bad.Add(1)
		}
		lat[sub] = append(lat[sub], now-sent)
		delivered[sub].Add(1)
	}
	pub, err := sys.Open(ctx, c.Subs, deliver)
	if err != nil {
		return Result{}, fmt.Errorf("relaybench: open %s: %w", sys.Name(), err)
	}
	defer pub.Close()
	minDelivered := func() int64 {
		m := delivered[0].Load()
		for i := 1; i < len(delivered); i++ {
			if v := delivered[i].Load(); v < m {
				m = v
			}
		}
		return m
	}
	buf := make([]byte, c.Size)
	for i := 16; i < len(buf); i++ {
		buf[i] = byte(i)
	}
	n := 0
	publish := func(upto int, deadline time.Time) error {
		for ; n < upto; n++ {
			spins := 0
			for int64(n)-minDelivered() >= int64(o.Window) {
				spins++
				if spins > 64 {
					time.Sleep(20 * time.Microsecond)
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
			if !deadline.IsZero() && n%1024 == 0 && time.Now().After(deadline) {
				return nil
			}
			binary.LittleEndian.PutUint64(buf, uint64(time.Since(base)))
			binary.LittleEndian.PutUint64(buf[8:], uint64(n))
			if err := pub.Publish(ctx, buf); err != nil {
				return fmt.Errorf("relaybench: publish %d: %w", n, err)
			}
		}
		return nil
	}
	drain := func() error {
		wait := time.Now().Add(30 * time.Second)
		for minDelivered() < int64(n) {
			if time.Now().After(wait) {
				return fmt.Errorf("relaybench: %s: only %d of %d events delivered to every subscriber", sys.Name(), minDelivered(), n)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(50 * time.Microsecond)
		}
		return nil
	}
	// Warm up (connections, buffers, the heap), then start clean.
	if err := publish(o.Warmup, time.Time{}); err != nil {
		return Result{}, err
	}
	if err := drain(); err != nil {
		return Result{}, err
	}
	// Deliveries are in order and each appends one latency, so the first
	// warm entries of each subscriber belong to the warm-up.
	warm := n
	runtime.GC()
	start := time.Now()
	var deadline time.Time
	if o.Duration > 0 {
		deadline = start.Add(o.Duration)
	}
	if err := publish(warm+o.Events, deadline); err != nil {
		return Result{}, err
	}
	if err := drain(); err != nil {
		return Result{}, err
	}
	n -= warm
	elapsed := time.Since(start)
	if b := bad.Load(); b > 0 {
		return Result{}, fmt.Errorf("relaybench: %s delivered %d events out of order or malformed", sys.Name(), b)
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l[warm:]...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	total := float64(n * c.Subs)
	r := Result{
		System:   sys.Name(),
		Case:     c,
		Events:   n,
		Elapsed:  elapsed,
		MsgsPerS: total / elapsed.Seconds(),
		MBPerS:   total * float64(c.Size) / elapsed.Seconds() / 1e6,
	}
	if len(all) > 0 {
		r.P50 = all[len(all)/2]
		r.P99 = all[len(all)*99/100]
	}
	return r, nil
}

// Header is the table header matching Row.
const Header = "system              subs  size    events    msgs/s      MB/s     p50        p99"

// Row formats a result for a table.
func Row(r Result) string {
	return fmt.Sprintf("%-18s %5d %5d %9d %10.0f %8.1f %9s %10s", r.System, r.Case.Subs, r.Case.Size, r.Events, r.MsgsPerS, r.MBPerS, round(r.P50), round(r.P99))
}

func round(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(100 * time.Nanosecond).String()
	}
}

// RatioRow compares a relay result to a peer result.
func RatioRow(relay, peer Result) string {
	return fmt.Sprintf("%-18s vs %-12s subs %d size %5d: msgs/s x%.2f   p99 x%.2f (relay p99 %s, peer p99 %s)",
		relay.System, peer.System, relay.Case.Subs, relay.Case.Size, relay.MsgsPerS/peer.MsgsPerS,
		float64(relay.P99)/float64(max(peer.P99, 1)), round(relay.P99), round(peer.P99))
}

// RawCopy measures copying n bytes over a loopback TCP connection (the
// baseline for a checkpoint transfer).
func RawCopy(ctx context.Context, n int) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	var wg sync.WaitGroup
	var serr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			serr = err
			return
		}
		defer c.Close()
		_, serr = io.Copy(io.Discard, c)
	}()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	data := make([]byte, n)
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		c.Close()
		return 0, err
	}
	c.Close()
	wg.Wait()
	return time.Since(start), serr
}

// Table renders results and, for each relay result with a peer result of
// the same case, the ratio.
func Table(results []Result, pairs map[string]string) string {
	var b strings.Builder
	fmt.Fprintln(&b, Header)
	for _, r := range results {
		fmt.Fprintln(&b, Row(r))
	}
	if len(pairs) > 0 {
		fmt.Fprintln(&b)
		for _, r := range results {
			peerName, ok := pairs[r.System]
			if !ok {
				continue
			}
			for _, p := range results {
				if p.System == peerName && p.Case == r.Case {
					fmt.Fprintln(&b, RatioRow(r, p))
				}
			}
		}
	}
	return b.String()
}
