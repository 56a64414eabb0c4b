package fs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/registry"
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
	waitJoined(t, r, mnt, "channels/news.liveobject")
	sh(t, mnt, "echo hello >> channels/news.liveobject; printf 'a\\nb\\nc' >> channels/news.liveobject; echo trunc > channels/news.liveobject")
	got := r.expect(t, 5, 10*time.Second)
	if strings.Join(got, ",") != "hello,a,b,c,trunc" {
		t.Fatalf("stream delivered %q", got)
	}
}

// TestPartialLineBeforeLaterWrites: a line without its newline, whose
// writer has closed the file, comes before what is written to the object
// after that close, even while another process still holds the same open
// file (its release then comes seconds later); and a process that shares
// the open file and writes after another closed it continues the line.
func TestPartialLineBeforeLaterWrites(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	sh(t, mnt, "touch channels/order")
	const file = "channels/order.liveobject"
	r := startReader(t, mnt, file)
	waitJoined(t, r, mnt, file)
	// sleep holds the first open file until it is killed.
	out := sh(t, mnt, "{ printf c; sleep 60 2>/dev/null & } >> "+file+"; echo d >> "+file+"; echo $!")
	var pid int
	if _, err := fmt.Sscan(out, &pid); err != nil || pid <= 0 {
		t.Fatalf("the holding process's pid: %q", out)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if got := r.expect(t, 2, 10*time.Second); strings.Join(got, ",") != "c,d" {
		t.Errorf("a closed partial line and a later write: %q, want c then d", got)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	sh(t, mnt, "{ printf e; sh -c 'printf f'; echo g; } >> "+file)
	if got := r.expect(t, 1, 10*time.Second); got[0] != "efg" {
		t.Errorf("a line written by two processes sharing the open file: %q, want efg", got)
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

// waitJoined writes pings into a stream file until the reader shows one,
// then a marker, and drops what comes before the marker: the reader has
// joined and has nothing queued.
func waitJoined(t *testing.T, r *lineReader, mnt, file string) {
	t.Helper()
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		sh(t, mnt, "echo ping >> "+file)
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
	sh(t, mnt, "echo joined >> "+file)
	for {
		select {
		case l := <-r.lines:
			if l == "joined" {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the marker written after joining did not arrive")
		}
	}
}

// TestLongLineRefused: a line longer than the relay's largest event (1
// MiB) fails with EFBIG however it is written and nothing of it is
// published; what is written after it on the same open file, up to the
// line's newline, is part of the refused line; the lines after it are
// published.
func TestLongLineRefused(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	const file = "channels/long.liveobject"
	sh(t, mnt, "touch channels/long")
	r := startReader(t, mnt, file)
	waitJoined(t, r, mnt, file)
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(strings.Repeat("a", 2<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big+"-lines", []byte(strings.Repeat("a", 2<<20)+"\nafter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	refused := func(script string, times int) {
		t.Helper()
		out, err := shErr(mnt, "exec 2>&1\n"+script)
		if err != nil || strings.Count(out, "rc=1") != times || strings.Count(out, "File too large") < times {
			t.Errorf("%s\n: %v %q, want %d EFBIG failures", script, err, out, times)
		}
	}
	// One write(2) of a 2 MiB line and a short one: the kernel hands it
	// on in parts, the part past the limit is refused, dd writes the
	// rest again and must see the error.
	refused("dd if="+big+"-lines bs=4M status=none >> "+file+"; echo rc=$?", 1)
	// printf writes the string and the newline apart (and stops at the
	// error); a line just over the limit comes as 1 MiB and then the rest
	// with its newline.
	refused(`printf '%s\n' "$(cat `+big+`)" >> `+file+`; echo rc=$?
printf 'short\n' >> `+file+`
printf '%s\n' "$(head -c 1048586 `+big+`)" >> `+file+`; echo rc=$?`, 2)
	// On one open file: cat fails in the middle of a line, echo ends it,
	// and the next line is published.
	refused(`exec 3>>`+file+`; cat `+big+` >&3; echo rc=$?; echo >&3; echo short2 >&3`, 1)
	// A variable's value over the limit is refused whole.
	sh(t, mnt, "echo 20 > examples/temperature.liveobject")
	refused(`head -c 2097152 /dev/zero | tr '\0' 1 > examples/temperature.liveobject; echo rc=$?`, 1)
	if v := sh(t, mnt, "head -n1 examples/temperature.liveobject"); v != "20\n" {
		t.Errorf("variable after a refused value: %q, want the value before", v)
	}
	// A line of exactly the limit is one event.
	sh(t, mnt, `printf '%s\n' "$(head -c 1048576 `+big+` | tr a b)" >> `+file+`; echo end >> `+file)
	want := []string{"short", "short2", strings.Repeat("b", 1<<20), "end"}
	var got []string
	for len(got) < len(want) {
		select {
		case l, ok := <-r.lines:
			if !ok {
				t.Fatalf("reader ended after %s", short(got))
			}
			got = append(got, l)
		case <-time.After(10 * time.Second):
			t.Fatalf("got %s, want %s", short(got), short(want))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got %s, want %s", short(got), short(want))
	}
}

// short shows lines with the long ones cut.
func short(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		if len(l) > 20 {
			l = fmt.Sprintf("%.10s...(%d bytes)", l, len(l))
		}
		fmt.Fprintf(&b, "%q ", l)
	}
	return "[" + strings.TrimSpace(b.String()) + "]"
}

// TestCloseWhileHeld: stopping while a process has its working directory
// in the mount and a file of it open returns at once without error: the
// connection is aborted, the mount detached and the server stopped.
func TestCloseWhileHeld(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	cmd := exec.Command("bash", "-c", "cd '"+mnt+"/examples' && exec 3<'"+mnt+"/services/cc.liveobject' && exec sleep 60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	proc := fmt.Sprintf("/proc/%d/", cmd.Process.Pid)
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		comm, _ := os.ReadFile(proc + "comm")
		cwd, _ := os.Readlink(proc + "cwd")
		if strings.TrimSpace(string(comm)) != "sleep" || cwd != filepath.Join(mnt, "examples") {
			return fmt.Errorf("holder not in place yet: %q in %q", comm, cwd)
		}
		return nil
	})
	start := time.Now()
	err := m.Close()
	took := time.Since(start)
	if err != nil || took > 4*time.Second {
		t.Fatalf("close while a process holds the mount: %v after %v, want nil at once", err, took)
	}
	t.Logf("closed in %v", took)
	if isMounted(mnt) {
		t.Fatal("still mounted after close")
	}
	if !m.waitServer(time.Second) {
		t.Fatal("the server still runs after close")
	}
}

// TestResyncEndsReaders: when the mount falls behind the root's changes,
// the registry drops the oldest (here, the removal of a channel being
// read) and sends a Resync; the readers of objects that went away in the
// burst still reach end of file.
func TestResyncEndsReaders(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	const file = "channels/victim.liveobject"
	sh(t, mnt, "touch channels/victim")
	r := startReader(t, mnt, file)
	waitJoined(t, r, mnt, file)

	// Stall the mount's change handling: it takes the next change and
	// waits for the listing's lock.
	m.idx.mu.Lock()
	locked := true
	unlock := func() {
		if locked {
			locked = false
			m.idx.mu.Unlock()
		}
	}
	defer unlock()
	if _, err := w.reg.CreateChannel("stall", "", ""); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		buf := make([]byte, 1<<20)
		if !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "fs.(*index).invalidate") {
			return fmt.Errorf("the change handler has not reached the listing's lock")
		}
		return nil
	})
	// The removal, then a burst that overflows the subscription.
	if err := w.reg.RemoveChannel("victim"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		if _, err := w.reg.CreateChannel(fmt.Sprintf("burst-%d", i), "", ""); err != nil {
			t.Fatal(err)
		}
	}
	unlock()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Fatal("a reader of a channel removed in a burst (a Resync) did not reach end of file")
	}
}

// TestTailFollows: `tail -n +1 -f`, which the README gives for following
// an object, shows the state and then each new event (stdbuf: the
// reader's output is a pipe here, not a terminal).
func TestTailFollows(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	const file = "examples/chat.liveobject"
	sh(t, mnt, "echo before >> "+file)
	tail, err := exec.LookPath("tail")
	if err != nil {
		t.Skip("no tail")
	}
	r := startReader(t, mnt, "stdbuf", "-oL", tail, "-n+1", "-f", file)
	if got := r.expect(t, 1, 10*time.Second); got[0] != "before" {
		t.Fatalf("tail -n +1 -f began with %q, want the history", got)
	}
	sh(t, mnt, "echo after >> "+file)
	if got := r.expect(t, 1, 10*time.Second); got[0] != "after" {
		t.Fatalf("tail -n +1 -f then showed %q, want the new event", got)
	}
}

// TestBrokenDefinition: opening an object whose definition does not
// resolve (here, a reference to a key the registry lacks) fails with
// EINVAL, and user.liveobject.error names the file and line; an object
// of a class this build lacks still gives ENOTSUP.
func TestBrokenDefinition(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	def, err := os.ReadFile(filepath.Join(w.root, "examples", "chat.liveobject"))
	if err != nil {
		t.Fatal(err)
	}
	const key = "011E83FA6A9F426993BB8EF26FF7D7B8" // the relay client's key
	if !strings.Contains(string(def), key) {
		t.Fatalf("the example chat does not name key %s:\n%s", key, def)
	}
	broken := strings.Replace(string(def), key, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", 1)
	if err := os.WriteFile(filepath.Join(w.root, "examples", "dangling.liveobject"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 3*time.Second, 50*time.Millisecond, func() error {
		_, err := os.Stat(filepath.Join(mnt, "examples", "dangling.liveobject"))
		return err
	})
	out, err := shErr(mnt, "exec 2>&1; cat examples/dangling.liveobject")
	if err == nil || !strings.Contains(out, "Invalid argument") {
		t.Fatalf("cat of a broken definition: %v %q, want EINVAL", err, out)
	}
	x := sh(t, mnt, "getfattr --only-values -n user.liveobject.error examples/dangling.liveobject")
	if !strings.Contains(x, "dangling.liveobject:") {
		t.Fatalf("error attribute does not name the file: %q", x)
	}
	for _, e := range w.reg.Objects() {
		if _, err := w.reg.Binding(e.Path); errors.Is(err, objects.ErrUnknownClass) && strings.HasPrefix(e.Path, "examples/") {
			out, err := shErr(mnt, "exec 2>&1; cat '"+e.Path+"'")
			if err == nil || !strings.Contains(out, "Operation not supported") {
				t.Fatalf("cat of an unknown class: %v %q, want ENOTSUP", err, out)
			}
			return
		}
	}
	t.Fatal("the example root has no object of an unknown class")
}

// TestLongChannelName: a channel name longer than the registry takes is
// refused with ENAMETOOLONG; one of the longest length is made.
func TestLongChannelName(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	for _, cmd := range []string{"touch", "mkdir"} {
		out, err := shErr(mnt, "exec 2>&1; "+cmd+" channels/"+strings.Repeat("n", registry.MaxChannelName+1))
		if err == nil || !strings.Contains(out, "File name too long") {
			t.Fatalf("%s of a %d-byte channel name: %v %q, want ENAMETOOLONG", cmd, registry.MaxChannelName+1, err, out)
		}
	}
	name := strings.Repeat("n", registry.MaxChannelName)
	sh(t, mnt, "touch channels/"+name+" && test -e channels/"+name+".liveobject")
}

// TestMountRefusals: mounting over a live mount, or on a file, is refused
// with a message that says so.
func TestMountRefusals(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	hub := channels.NewHub(dialRelay, channels.Options{})
	t.Cleanup(func() { hub.Close() })
	cfg := Config{Root: w.reg, Hub: hub, ChannelParams: map[string]string{"address": w.addr}}
	if m2, err := New(m.Dir(), cfg); err == nil {
		m2.Close()
		t.Fatal("a second mount over a live mount was made")
	} else if !errors.Is(err, ErrMounted) {
		t.Fatalf("a second mount over a live mount: %v, want ErrMounted", err)
	}
	if ls := sh(t, m.Dir(), "ls"); !strings.Contains(ls, "channels") {
		t.Fatalf("the first mount no longer answers: %q", ls)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if m2, err := New(file, cfg); err == nil {
		m2.Close()
		t.Fatal("a mount on a file was made")
	} else if !strings.Contains(err.Error(), "is a file, not a folder") {
		t.Fatalf("a mount on a file: %v, want a message saying it is a file", err)
	}
	// A folder that holds a file: refused, unless allowed; then the file
	// is hidden while mounted, and there again afterwards.
	full := filepath.Join(t.TempDir(), "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "precious.txt"), []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if m2, err := New(full, cfg); err == nil {
		m2.Close()
		t.Fatal("a mount on a folder that holds a file was made")
	} else if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "precious.txt") || !strings.Contains(err.Error(), "--allow-non-empty") {
		t.Fatalf("a mount on a folder that holds a file: %v, want ErrNotEmpty naming the file and the flag", err)
	}
	cfg.AllowNonEmpty = true
	m2, err := New(full, cfg)
	if err != nil {
		t.Fatalf("a mount on a folder that holds a file, allowed: %v", err)
	}
	if ls := sh(t, full, "ls"); !strings.Contains(ls, "channels") || strings.Contains(ls, "precious.txt") {
		m2.Close()
		t.Fatalf("the allowed mount shows %q, want the live objects only", ls)
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(full, "precious.txt")); err != nil || string(b) != "kept\n" {
		t.Fatalf("after the unmount the hidden file reads %q, %v", b, err)
	}
}

// TestTwoObjectsOnOneChannel: a text note bound to a channel is joined
// while the channel's own file is open, and both show one value (the
// process holds one membership per channel); a stream on that channel,
// another kind of object, is refused with EBUSY and a message naming both.
func TestTwoObjectsOnOneChannel(t *testing.T) {
	w := newWorld(t)
	m := w.mount()
	mnt := m.Dir()
	notes := "examples/Team Room/Project Notes/meeting notes.liveobject"
	sh(t, mnt, "printf 'agenda\\n' > channels/Text_1.liveobject")
	r := startReader(t, mnt, "channels/Text_1.liveobject")
	if got := r.expect(t, 1, 5*time.Second)[0]; got != "agenda" {
		t.Fatalf("channels/Text_1 read %q", got)
	}
	sh(t, mnt, "printf 'minutes\\n' > '"+notes+"'")
	if got := sh(t, mnt, "head -n1 '"+notes+"'"); got != "minutes\n" {
		t.Fatalf("%s read %q", notes, got)
	}
	if got := r.expect(t, 1, 5*time.Second)[0]; got != "minutes" {
		t.Fatalf("channels/Text_1 read %q after the note was written", got)
	}
	// A stream on the same channel.
	chat, err := os.ReadFile(filepath.Join(w.root, "examples", "chat.liveobject"))
	if err != nil {
		t.Fatal(err)
	}
	stream := strings.Replace(string(chat), "00000000000000000000000000000002", "00000000000000000000000000000001", 1)
	if err := os.WriteFile(filepath.Join(w.root, "examples", "text_as_stream.liveobject"), []byte(stream), 0o644); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		_, err := shErr(mnt, "test -e examples/text_as_stream.liveobject")
		return err
	})
	out, err := shErr(mnt, "cat examples/text_as_stream.liveobject")
	if err == nil || !strings.Contains(out, "Device or resource busy") {
		t.Fatalf("a stream on a channel joined as a text: %q %v, want EBUSY", out, err)
	}
	msg := sh(t, mnt, "getfattr --only-values -n user.liveobject.error examples/text_as_stream.liveobject")
	if !strings.Contains(msg, "joined as a text") || !strings.Contains(msg, "same class") {
		t.Fatalf("user.liveobject.error: %q", msg)
	}
}
