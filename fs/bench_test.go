package fs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/objects/logic"
)

// The mount's benchmarks compare what a shell tool gets through the mount
// with what the Go client gets directly, in the same run, against the same
// relay, and report the ratio.

const benchLine = 100 // bytes per event, newline excluded

func benchEvents(n int) [][]byte {
	evs := make([][]byte, n)
	for i := range evs {
		evs[i] = []byte(fmt.Sprintf("%0*d", benchLine, i))
	}
	return evs
}

// directReceive measures events/s for a Go client joined to channel while
// n events are published.
func directReceive(b *testing.B, hub *channels.Hub, addr, channel string, n int) float64 {
	ctx := context.Background()
	sp := channels.Spec{Object: "bench", Driver: "relay", Params: map[string]string{"address": addr}, Channel: channel, Logic: logic.Config{Kind: logic.Stream}}
	sub, err := hub.Acquire(ctx, sp)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Release()
	r := sub.Object().NewReader()
	defer r.Close()
	pubHub := channels.NewHub(dialRelay, channels.Options{})
	defer pubHub.Close()
	pub, err := pubHub.Acquire(ctx, sp)
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Release()
	evs := benchEvents(n)
	start := time.Now()
	go pub.PublishBatch(ctx, evs)
	want := n * (benchLine + 1)
	buf := make([]byte, 1<<16)
	for got := 0; got < want; {
		k, err := r.Read(ctx, buf)
		if err != nil {
			b.Fatal(err)
		}
		got += k
	}
	return float64(n) / time.Since(start).Seconds()
}

// catReceive measures events/s that cat gets through the mount.
func catReceive(b *testing.B, m *Mount, hubAddr, name string, n int) float64 {
	ctx := context.Background()
	cmd := exec.Command("bash", "-c", fmt.Sprintf("head -c %d %s | wc -c", n*(benchLine+1), filepath.Join(m.Dir(), "channels", name+".liveobject")))
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	// Wait until cat has joined: the mount's hub holds the channel.
	deadline := time.Now().Add(10 * time.Second)
	for len(m.cfg.Hub.Joined()) == 0 {
		if time.Now().After(deadline) {
			b.Fatal("cat did not join")
		}
		time.Sleep(5 * time.Millisecond)
	}
	pubHub := channels.NewHub(dialRelay, channels.Options{})
	defer pubHub.Close()
	md, _ := m.idx.channel(name)
	pub, err := pubHub.Acquire(ctx, channels.Spec{Object: "bench", Driver: "relay", Params: map[string]string{"address": hubAddr}, Channel: md.ID, Logic: logic.Config{Kind: logic.Stream}})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Release()
	start := time.Now()
	go pub.PublishBatch(ctx, benchEvents(n))
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	if got, _ := strconv.Atoi(strings.TrimSpace(out.String())); got != n*(benchLine+1) {
		b.Fatalf("cat got %d bytes", got)
	}
	return float64(n) / el.Seconds()
}

// BenchmarkMountRead: events/s that cat receives through the mount vs the
// Go client directly; reports the ratio (target >= 0.8).
func BenchmarkMountRead(b *testing.B) {
	w := newWorld(b)
	m := w.mount()
	hub := channels.NewHub(dialRelay, channels.Options{})
	defer hub.Close()
	const n = 100000
	var direct, mount float64
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("read%d", i)
		if _, err := w.reg.CreateChannel(name, "", ""); err != nil {
			b.Fatal(err)
		}
		m.idx.invalidate()
		md, _ := m.idx.channel(name)
		direct += directReceive(b, hub, w.addr, md.ID+"-direct", n)
		mount += catReceive(b, m, w.addr, name, n)
	}
	b.ReportMetric(direct/float64(b.N), "direct-events/s")
	b.ReportMetric(mount/float64(b.N), "cat-events/s")
	b.ReportMetric(mount/direct, "ratio")
}

// BenchmarkMountWrite: line events/s published by dd bs=64K through the
// mount vs the Go client publishing the same lines directly; reports the
// ratio (target >= 0.5).
func BenchmarkMountWrite(b *testing.B) {
	w := newWorld(b)
	m := w.mount()
	const n = 200000
	data := bytes.Join(benchEvents(n), []byte("\n"))
	data = append(data, '\n')
	input := filepath.Join(b.TempDir(), "lines")
	if err := os.WriteFile(input, data, 0o644); err != nil {
		b.Fatal(err)
	}
	hub := channels.NewHub(dialRelay, channels.Options{})
	defer hub.Close()
	ctx := context.Background()
	var direct, mount float64
	for i := 0; i < b.N; i++ {
		pub, err := hub.Acquire(ctx, channels.Spec{Object: "bench", Driver: "relay", Params: map[string]string{"address": w.addr}, Channel: fmt.Sprintf("wdirect%d", i), Logic: logic.Config{Kind: logic.Stream}})
		if err != nil {
			b.Fatal(err)
		}
		// The Go client gets the lines in 64 KiB chunks too, cut at
		// line ends, as the mount's writer does.
		evs := benchEvents(n)
		start := time.Now()
		per := 65536 / (benchLine + 1)
		for j := 0; j < n; j += per {
			if err := pub.PublishBatch(ctx, evs[j:min(n, j+per)]); err != nil {
				b.Fatal(err)
			}
		}
		direct += float64(n) / time.Since(start).Seconds()
		pub.Release()

		name := fmt.Sprintf("write%d", i)
		sh(b, m.Dir(), "touch channels/"+name)
		start = time.Now()
		sh(b, m.Dir(), fmt.Sprintf("dd if=%s of=channels/%s.liveobject bs=64K 2>/dev/null", input, name))
		mount += float64(n) / time.Since(start).Seconds()
	}
	b.ReportMetric(direct/float64(b.N), "direct-events/s")
	b.ReportMetric(mount/float64(b.N), "dd-events/s")
	b.ReportMetric(mount/direct, "ratio")
	b.ReportMetric(mount/float64(b.N)*(benchLine+1)/1e6, "dd-MB/s")
}

// latencyScript writes a line on mount A and reads it on mount B, one at
// a time, and prints p50 and p99 in microseconds.
const latencyScript = `
import os, sys, time
a, b, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = os.open(b, os.O_RDONLY)
w = os.open(a, os.O_WRONLY | os.O_APPEND)
buf = b""
lat = []
for i in range(-20, n):
    t0 = time.perf_counter_ns()
    os.write(w, b"lat %d\n" % i)
    want = b"lat %d\n" % i
    while want not in buf:
        buf += os.read(r, 65536)
    buf = buf[buf.index(want) + len(want):]
    if i >= 0:
        lat.append((time.perf_counter_ns() - t0) / 1000)
lat.sort()
print(lat[len(lat) // 2], lat[len(lat) * 99 // 100])
`

// BenchmarkMountLatency: a line written on mount A until it is read on
// mount B (p50, p99), both mounts in this process, client and server on
// loopback.
func BenchmarkMountLatency(b *testing.B) {
	w := newWorld(b)
	ma, mb := w.mount(), w.mount()
	sh(b, ma.Dir(), "touch channels/lat")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(mb.Dir(), "channels", "lat.liveobject")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("channel not visible on mount B")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var p50, p99 float64
	for i := 0; i < b.N; i++ {
		out := sh(b, "/", fmt.Sprintf("python3 -c '%s' %s %s 1000", strings.ReplaceAll(latencyScript, "'", "'\\''"),
			filepath.Join(ma.Dir(), "channels", "lat.liveobject"), filepath.Join(mb.Dir(), "channels", "lat.liveobject")))
		var a, c float64
		if _, err := fmt.Sscan(out, &a, &c); err != nil {
			b.Fatalf("latency script: %q", out)
		}
		p50 += a
		p99 += c
	}
	b.ReportMetric(p50/float64(b.N), "p50-µs")
	b.ReportMetric(p99/float64(b.N), "p99-µs")
}
