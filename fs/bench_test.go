package fs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/cmd/liveobjects/clibin"
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

// catReceive measures events/s that cat gets through the mount: cat
// writes into a file, and the time runs until the file holds every event.
func catReceive(b *testing.B, m *Mount, hubAddr, name string, n int) float64 {
	md, _ := m.idx.channel(name)
	cmd := exec.Command("cat", filepath.Join(m.Dir(), "channels", name+".liveobject"))
	// cat has joined once the mount's hub holds the channel.
	joined := func() bool { return len(m.cfg.Hub.Joined()) > 0 }
	return receiveInFile(b, hubAddr, cmd, joined, md.ID, n)
}

// receiveInFile measures events/s that a subscriber process gets: cmd
// writes each event as a line into a file; once joined reports true, n
// events are published on channel and the time runs until the file holds
// every one of them.
func receiveInFile(b *testing.B, addr string, cmd *exec.Cmd, joined func() bool, channel string, n int) float64 {
	f, err := os.Create(filepath.Join(b.TempDir(), "received"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout = f
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for !joined() {
		if time.Now().After(deadline) {
			b.Fatalf("%s did not join %s", cmd.Args, channel)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx := context.Background()
	pubHub := channels.NewHub(dialRelay, channels.Options{})
	defer pubHub.Close()
	pub, err := pubHub.Acquire(ctx, channels.Spec{Object: "bench", Driver: "relay", Params: map[string]string{"address": addr}, Channel: channel, Logic: logic.Config{Kind: logic.Stream}})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Release()
	start := time.Now()
	go pub.PublishBatch(ctx, benchEvents(n))
	return float64(n) / waitFile(b, f, int64(n*(benchLine+1))).Sub(start).Seconds()
}

// relayHasMember returns a join condition for receiveInFile: the relay
// has a member on the channel known by any of keys (name or ID).
func relayHasMember(w *world, keys ...string) func() bool {
	return func() bool {
		for _, c := range w.relay.Channels() {
			for _, k := range keys {
				if (c.Name == k || c.ID == k) && c.Members > 0 {
					return true
				}
			}
		}
		return false
	}
}

// waitFile waits until f holds want bytes and returns when it did.
func waitFile(b *testing.B, f *os.File, want int64) time.Time {
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := f.Stat()
		if err != nil {
			b.Fatal(err)
		}
		if st.Size() >= want {
			if st.Size() != want {
				b.Fatalf("got %d bytes, want %d", st.Size(), want)
			}
			return time.Now()
		}
		if time.Now().After(deadline) {
			b.Fatalf("got %d of %d bytes", st.Size(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// subReceive measures events/s that the Go client gets as a process of
// its own (liveobjects sub, printing each event as a line into a file),
// the same shape as cat through the mount.
func subReceive(b *testing.B, w *world, channel string, n int) float64 {
	bin := clibin.Path(b)
	cmd := exec.Command(bin, "-q", "sub", "--relay", w.addr, channel)
	return receiveInFile(b, w.addr, cmd, relayHasMember(w, channel), channel, n)
}

// procMount starts 'liveobjects mount' of the world's root against its
// relay, as a process of its own, and returns its mountpoint once mounted.
func procMount(b *testing.B, w *world) string {
	bin := clibin.Path(b)
	mnt := filepath.Join(b.TempDir(), "live")
	cmd := exec.Command(bin, "-q", "mount", w.root, mnt, "--relay", w.addr)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		exec.Command("umount", "-l", mnt).Run()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(mnt, "channels")); err == nil {
			return mnt
		}
		if time.Now().After(deadline) {
			b.Fatal("liveobjects mount did not mount")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procCatReceive measures events/s that cat gets through a mount daemon of
// its own (procMount): the same shape as liveobjects sub, a subscriber
// process of its own.
func procCatReceive(b *testing.B, w *world, mnt, name, id string, n int) float64 {
	path := filepath.Join(mnt, "channels", name+".liveobject")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s did not appear in the mount", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return receiveInFile(b, w.addr, exec.Command("cat", path), relayHasMember(w, name, id), id, n)
}

// BenchmarkMountRead: events/s that cat receives through the mount (in
// this process, and as a 'liveobjects mount' process of its own), against
// the Go client as a process of its own (liveobjects sub into a file, the
// same shape: target ratio >= 0.8) and against the Go client inside this
// process (no process, pipe or file of its own).
func BenchmarkMountRead(b *testing.B) {
	w := newWorld(b)
	m := w.mount()
	pm := procMount(b, w)
	hub := channels.NewHub(dialRelay, channels.Options{})
	defer hub.Close()
	const n = 100000
	var inproc, sub, mount, pmount float64
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("read%d", i)
		if _, err := w.reg.CreateChannel(name, "", ""); err != nil {
			b.Fatal(err)
		}
		m.idx.invalidate()
		md, _ := m.idx.channel(name)
		inproc += directReceive(b, hub, w.addr, md.ID+"-direct", n)
		sub += subReceive(b, w, md.ID+"-sub", n)
		mount += catReceive(b, m, w.addr, name, n)
		// A channel of its own: a joiner of the first gets its history.
		pname := name + "p"
		if _, err := w.reg.CreateChannel(pname, "", ""); err != nil {
			b.Fatal(err)
		}
		m.idx.invalidate()
		pmd, _ := m.idx.channel(pname)
		pmount += procCatReceive(b, w, pm, pname, pmd.ID, n)
	}
	b.ReportMetric(inproc/float64(b.N), "inprocess-events/s")
	b.ReportMetric(sub/float64(b.N), "sub-events/s")
	b.ReportMetric(mount/float64(b.N), "cat-events/s")
	b.ReportMetric(mount/float64(b.N)*(benchLine+1)/1e6, "cat-MB/s")
	b.ReportMetric(pmount/float64(b.N), "cat-mountproc-events/s")
	b.ReportMetric(mount/sub, "ratio")
	b.ReportMetric(pmount/sub, "ratio-mountproc")
	b.ReportMetric(mount/inproc, "ratio-inprocess")
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
