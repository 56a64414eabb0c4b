package fs

import (
	"fmt"

	"github.com/liveobjects/liveobjects/channels"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestBrowse drives the tree with the usual tools while a stream is open:
// none of them may block or fail.
func TestBrowse(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	// A blocked reader on a pure stream must not slow browsing down.
	sh(t, mnt, "touch channels/browse")
	r := startReader(t, mnt, "channels/browse.liveobject")
	_ = r

	ls := sh(t, mnt, "ls")
	for _, want := range []string{"channels", "examples", "registry", "services"} {
		if !strings.Contains(ls, want) {
			t.Errorf("ls of the mount lacks %s:\n%s", want, ls)
		}
	}
	found := sh(t, mnt, "find . -name '*.liveobject' | sort")
	for _, want := range []string{"./examples/chat.liveobject", "./channels/browse.liveobject"} {
		if !strings.Contains(found, want) {
			t.Errorf("find lacks %s:\n%s", want, found)
		}
	}
	sh(t, mnt, "ls -lR . >/dev/null && du -s . >/dev/null && tree . >/dev/null")
	st := sh(t, mnt, "stat -c '%s %F' examples/chat.liveobject")
	if !strings.HasPrefix(st, "4096 regular file") {
		t.Errorf("stat of a live file: %q, want a non-empty regular file", st)
	}
	walked := sh(t, mnt, `python3 -c 'import os
n=0
for d, ds, fs in os.walk("."):
    n += len(fs)
print(n)'`)
	var n int
	fmt.Sscan(walked, &n)
	if n < 5 {
		t.Errorf("os.walk found %d files", n)
	}
	x := sh(t, mnt, "getfattr -d -m - examples/chat.liveobject")
	for _, want := range []string{"user.liveobject.category=\"stream\"", "user.liveobject.driver=\"relay\"", "user.liveobject.definition"} {
		if !strings.Contains(x, want) {
			t.Errorf("getfattr lacks %s:\n%s", want, x)
		}
	}
	// File-manager probes are answered at once, with "no such file".
	for _, p := range []string{".hidden", ".Trash-0", ".Trash", "examples/.hidden", ".xdg-volume-info"} {
		if _, err := os.Stat(filepath.Join(mnt, p)); err == nil || !os.IsNotExist(err) {
			// The test process may stat: a stat is answered from memory.
			t.Errorf("probe %s: %v", p, err)
		}
	}
}

// TestPublishAndStream: cat joins and streams, echo publishes.
func TestPublishAndStream(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	sh(t, mnt, "touch channels/news")
	r := startReader(t, mnt, "channels/news.liveobject")
	// The reader has joined once a write is delivered to it; write until
	// the first shows up, then the rest in order.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		sh(t, mnt, "echo ping >> channels/news.liveobject")
		select {
		case l := <-r.lines:
			if l != "ping" {
				return fmt.Errorf("first line %q", l)
			}
			return nil
		case <-time.After(200 * time.Millisecond):
			return fmt.Errorf("no line yet")
		}
	})
	for len(r.lines) > 0 {
		<-r.lines // extra pings
	}
	sh(t, mnt, "echo hello >> channels/news.liveobject; printf 'a\\nb\\nc' >> channels/news.liveobject; echo trunc > channels/news.liveobject")
	got := r.expect(t, 5, 10*time.Second)
	if strings.Join(got, ",") != "hello,a,b,c,trunc" {
		t.Fatalf("stream delivered %q", got)
	}
}

// TestStateOnJoin: a variable's and a text's first read is the state.
func TestStateOnJoin(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	sh(t, mnt, "echo 21.5 > examples/temperature.liveobject")
	out := sh(t, mnt, "head -n1 examples/temperature.liveobject")
	if out != "21.5\n" {
		t.Fatalf("variable read %q, want the value written", out)
	}
	sh(t, mnt, "printf 'line one\\nline two\\n' > examples/shared_text.liveobject")
	out = sh(t, mnt, "head -n2 examples/shared_text.liveobject")
	if out != "line one\nline two\n" {
		t.Fatalf("text read %q", out)
	}
	// A stream with history gives its recent events to a joiner.
	sh(t, mnt, "for i in 1 2 3; do echo h$i >> examples/chat.liveobject; done")
	out = sh(t, mnt, "head -n3 examples/chat.liveobject")
	if out != "h1\nh2\nh3\n" {
		t.Fatalf("chat history %q", out)
	}
}

// TestInterruptAndUnmount: Ctrl-C ends a blocked cat; unmounting ends
// blocked readers with end of file.
func TestInterruptAndUnmount(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	sh(t, mnt, "touch channels/quiet")
	r := startReader(t, mnt, "channels/quiet.liveobject")
	time.Sleep(300 * time.Millisecond) // let it block in read
	start := time.Now()
	r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-r.done:
		t.Logf("cat ended %v after SIGINT", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("cat blocked in a read did not end on SIGINT")
	}

	r2 := startReader(t, mnt, "channels/quiet.liveobject")
	time.Sleep(300 * time.Millisecond)
	if err := m.Close(); err != nil {
		t.Fatalf("unmount with a blocked reader: %v", err)
	}
	select {
	case <-r2.done:
		if r2.err != nil {
			t.Fatalf("reader ended with %v, want end of file", r2.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked reader did not end at unmount")
	}
}

// TestConcurrentWriters: eight processes write lines at once; every line
// arrives exactly once and whole.
func TestConcurrentWriters(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	sh(t, mnt, "touch channels/many")
	r := startReader(t, mnt, "channels/many.liveobject")
	time.Sleep(200 * time.Millisecond)
	const writers, lines = 8, 250
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			script := fmt.Sprintf("for j in $(seq 1 %d); do echo \"writer-%d-line-$j-$(printf '%%0100d' 0)\"; done >> channels/many.liveobject", lines, i)
			if out, err := shErr(mnt, script); err != nil {
				t.Errorf("writer %d: %v %s", i, err, out)
			}
		}(i)
	}
	wg.Wait()
	got := r.expect(t, writers*lines, 60*time.Second)
	seen := map[string]bool{}
	last := make([]int, writers)
	for _, l := range got {
		if seen[l] {
			t.Fatalf("line twice: %q", l)
		}
		seen[l] = true
		var wi, li int
		if _, err := fmt.Sscanf(l, "writer-%d-line-%d-", &wi, &li); err != nil || !strings.HasSuffix(l, strings.Repeat("0", 100)) {
			t.Fatalf("torn line %q", l)
		}
		if li != last[wi]+1 {
			t.Fatalf("writer %d: line %d after %d", wi, li, last[wi])
		}
		last[wi] = li
	}
}

// TestChannelsFromShell: touch, mkdir and rm manage channels on disk.
func TestChannelsFromShell(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	sh(t, mnt, "touch channels/alpha && mkdir channels/beta")
	checkFor(t, 3*time.Second, 50*time.Millisecond, func() error {
		ls := sh(t, mnt, "ls channels")
		if !strings.Contains(ls, "alpha.liveobject") || !strings.Contains(ls, "beta.liveobject") {
			return fmt.Errorf("ls channels: %q", ls)
		}
		return nil
	})
	mds, _ := filepath.Glob(filepath.Join(w.root, "channels", "*", "metadata.xml"))
	var names []string
	for _, p := range mds {
		b, _ := os.ReadFile(p)
		names = append(names, string(b))
	}
	all := strings.Join(names, "\n")
	if !strings.Contains(all, "<Name>alpha</Name>") || !strings.Contains(all, "<Name>beta</Name>") {
		t.Fatalf("metadata on disk lacks the new channels:\n%s", all)
	}
	r := startReader(t, mnt, "channels/alpha.liveobject")
	time.Sleep(200 * time.Millisecond)
	sh(t, mnt, "rm channels/alpha.liveobject")
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Fatal("a reader of a removed channel did not reach end of file")
	}
	checkFor(t, 3*time.Second, 50*time.Millisecond, func() error {
		if strings.Contains(sh(t, mnt, "ls channels"), "alpha") {
			return fmt.Errorf("alpha still listed")
		}
		return nil
	})
}

// TestUnknownClass: listed, definition shown, joining fails naming the
// class.
func TestUnknownClass(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	var unknown string
	for _, e := range w.reg.Objects() {
		if !strings.HasPrefix(e.Path, "examples/") {
			continue
		}
		if _, err := w.reg.Binding(e.Path); err != nil {
			unknown = e.Path
		}
	}
	if unknown == "" {
		t.Fatal("the example root has no object of an unknown class")
	}
	if _, err := shErr(mnt, "cat '"+unknown+"'"); err == nil {
		t.Fatal("joining an object of an unknown class succeeded")
	}
	x := sh(t, mnt, "getfattr --only-values -n user.liveobject.error '"+unknown+"'")
	if !strings.Contains(x, "class") {
		t.Fatalf("error attribute does not name the class: %q", x)
	}
	def := sh(t, mnt, "getfattr --only-values -n user.liveobject.definition '"+unknown+"'")
	if !strings.Contains(def, "<Object") {
		t.Fatalf("definition attribute: %q", def)
	}
}

// TestTwoMounts: two mounts of one relay see the same events in the same
// order.
func TestTwoMounts(t *testing.T) {
	w := newWorld(t)
	a, b := w.mount(), w.mount()
	sh(t, a.Dir(), "touch channels/shared")
	checkFor(t, 3*time.Second, 50*time.Millisecond, func() error {
		_, err := os.Stat(filepath.Join(b.Dir(), "channels", "shared.liveobject"))
		return err
	})
	ra := startReader(t, a.Dir(), "channels/shared.liveobject")
	rb := startReader(t, b.Dir(), "channels/shared.liveobject")
	time.Sleep(300 * time.Millisecond)
	n := 1000
	if os.Getenv("LIVEOBJECTS_LONG") != "" {
		n = 50000
	}
	var wg sync.WaitGroup
	for _, m := range []*Mount{a, b} {
		wg.Add(1)
		go func(m *Mount) {
			defer wg.Done()
			if out, err := shErr(m.Dir(), fmt.Sprintf("for i in $(seq 1 %d); do echo %s-$i; done >> channels/shared.liveobject", n, filepath.Base(filepath.Dir(m.Dir())))); err != nil {
				t.Errorf("writer: %v %s", err, out)
			}
		}(m)
	}
	wg.Wait()
	la := ra.expect(t, 2*n, 120*time.Second)
	lb := rb.expect(t, 2*n, 120*time.Second)
	if strings.Join(la, ",") != strings.Join(lb, ",") {
		t.Fatal("the two mounts delivered different orders")
	}
	s := append([]string(nil), la...)
	sort.Strings(s)
	for i := 1; i < len(s); i++ {
		if s[i] == s[i-1] {
			t.Fatalf("duplicate %q", s[i])
		}
	}
}

// TestRemovedObjectEndsReaders: deleting a definition from the root ends
// its readers.
func TestRemovedObjectEndsReaders(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	src := filepath.Join(w.root, "examples", "chat.liveobject")
	def, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.root, "examples", "gone.liveobject"), def, 0o644); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 3*time.Second, 50*time.Millisecond, func() error {
		_, err := os.Stat(filepath.Join(mnt, "examples", "gone.liveobject"))
		return err
	})
	r := startReader(t, mnt, "examples/gone.liveobject")
	time.Sleep(300 * time.Millisecond)
	os.Remove(filepath.Join(w.root, "examples", "gone.liveobject"))
	select {
	case <-r.done:
		if r.err != nil {
			t.Fatalf("reader: %v", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reader of a removed object did not end")
	}
}

// TestWriteFailsWithEIO: when the relay is gone a write fails with EIO
// within the publish timeout, and the daemon stays up.
func TestWriteFailsWithEIO(t *testing.T) {
	w := newWorld(t)
	hub := channels.NewHub(dialRelay, channels.Options{JoinTimeout: 2 * time.Second})
	mnt := filepath.Join(t.TempDir(), "live")
	m, err := New(mnt, Config{Root: w.reg, Hub: hub, ChannelParams: map[string]string{"address": w.addr}, PublishTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); hub.Close() })
	sh(t, mnt, "touch channels/fragile")
	r := startReader(t, mnt, "channels/fragile.liveobject") // keeps the channel joined
	sh(t, mnt, "echo before >> channels/fragile.liveobject")
	r.expect(t, 1, 5*time.Second)
	w.relay.Close()
	out, err := shErr(mnt, "echo lost >> channels/fragile.liveobject")
	if err == nil || !strings.Contains(out, "Input/output error") {
		t.Fatalf("a write with the relay gone: %v %q, want EIO", err, out)
	}
	// The mount still answers.
	if ls := sh(t, mnt, "ls channels"); !strings.Contains(ls, "fragile.liveobject") {
		t.Fatalf("ls after a failed write: %q", ls)
	}
}
