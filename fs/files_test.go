package fs

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/objects/micro"
)

// moMount mounts w's root with a files/ folder over a micro-object server
// of its own (in this process), sharing keys with the others.
func (w *world) moMount(keys micro.Keys) (*Mount, *micro.Server) {
	w.t.Helper()
	srv, err := micro.NewServer(micro.ServerConfig{Listen: "127.0.0.1:0", DataDir: w.t.TempDir(), LocalSocket: "-", FloodInterval: 200 * time.Millisecond})
	if err != nil {
		w.t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	lib := micro.NewLib(srv, keys)
	folder := micro.NewFolder(lib, 3, nil)
	hub := channels.NewHub(dialRelay, channels.Options{})
	m, err := New(w.t.TempDir()+"/live", Config{Root: w.reg, Hub: hub, ChannelParams: map[string]string{"address": w.addr}, Files: folder})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		m.Close()
		hub.Close()
		folder.Close()
		lib.Close()
		srv.Close()
	})
	return m, srv
}

// moMounts mounts a fresh world's root n times, each with a micro-object
// server of its own, all with one set of keys.
func moMounts(t *testing.T, n int) []*Mount {
	t.Helper()
	w := newWorld(t)
	keys, err := micro.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	ms := make([]*Mount, n)
	for i := range ms {
		ms[i], _ = w.moMount(keys)
	}
	return ms
}

// waitRead waits until cat of file in m's files/ gives want.
func waitRead(t *testing.T, m *Mount, file, want string) {
	t.Helper()
	checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if got, err := shErr(m.Dir(), "cat files/"+file); err != nil || got != want {
			return fmt.Errorf("files/%s in %s reads %q %v, want %q", file, m.Dir(), got, err, want)
		}
		return nil
	})
}

// TestFilesFolder: a distributed file written on one mount is read on
// another, through two micro-object servers that flood it.
func TestFilesFolder(t *testing.T) {
	ms := moMounts(t, 2)
	a, b := ms[0], ms[1]
	sh(t, a.Dir(), "printf 'first version\\n' > files/notes.txt")
	if got := sh(t, a.Dir(), "cat files/notes.txt"); got != "first version\n" {
		t.Fatalf("read back on A: %q", got)
	}
	if ls := sh(t, a.Dir(), "ls -l files"); !strings.Contains(ls, "notes.txt") {
		t.Fatalf("ls files: %s", ls)
	}
	// B opens A's file by its token, which A's mount shows.
	token := sh(t, a.Dir(), "getfattr --only-values -n user.liveobject.token files/notes.txt")
	if want := a.cfg.Files.(*micro.Folder).Tokens()["notes.txt"]; token != want || len(token) != 79 {
		t.Fatalf("user.liveobject.token of files/notes.txt: %q, want %q", token, want)
	}
	if got := sh(t, a.Dir(), "getfattr -d -m - files/notes.txt"); !strings.Contains(got, `user.liveobject.token="`+token+`"`) {
		t.Fatalf("getfattr -d does not list the token:\n%s", got)
	}
	sh(t, b.Dir(), "touch 'files/"+token+"'")
	waitRead(t, b, "notes.txt", "first version\n")
	// A write on B floods to A.
	sh(t, b.Dir(), "printf 'second version, from B\\n' > files/notes.txt")
	waitRead(t, a, "notes.txt", "second version, from B\n")
}

// TestFilesRemoveAndTimes: rm in files/ stops this server's sharing of a
// file, which stays gone here while the other server keeps it, and the
// token brings it back; a file's mtime is when the mount last saw it
// change, not when the mount started; fsync stores the file.
func TestFilesRemoveAndTimes(t *testing.T) {
	ms := moMounts(t, 2)
	a, b := ms[0], ms[1]
	mtime := func(m *Mount) time.Time {
		t.Helper()
		var sec, nsec int64
		out := sh(t, m.Dir(), "date -r files/notes.txt +'%s %N'")
		if _, err := fmt.Sscan(out, &sec, &nsec); err != nil {
			t.Fatalf("mtime of files/notes.txt: %q: %v", out, err)
		}
		return time.Unix(sec, nsec)
	}
	// The kernel stamps a write with its coarse clock, which may lag the
	// real time by a few ticks (up to 64 ms seen here): mtime is held to
	// the time before the write less a slack, and the write comes long
	// enough after the mounts started that the slack cannot reach back
	// to their start.
	const coarse = 250 * time.Millisecond
	started := time.Now()
	time.Sleep(2 * coarse)
	before := time.Now()
	sh(t, a.Dir(), "printf 'one\\n' > files/notes.txt")
	if got := mtime(a); got.Before(before.Add(-coarse)) || !got.After(started) {
		t.Fatalf("mtime after a write: %v, before the write (%v) and the mounts' start (before %v)", got, before, started)
	}
	token := sh(t, a.Dir(), "getfattr --only-values -n user.liveobject.token files/notes.txt")
	sh(t, b.Dir(), "touch 'files/"+token+"'")
	waitRead(t, b, "notes.txt", "one\n")
	// A change made on B shows in A's mtime once A reads it.
	seenOnA := mtime(a)
	sh(t, b.Dir(), "printf 'two\\n' > files/notes.txt")
	waitRead(t, a, "notes.txt", "two\n")
	if got := mtime(a); !got.After(seenOnA) {
		t.Errorf("A's mtime after reading B's change: %v, not after %v", got, seenOnA)
	}
	// fsync stores what was written before the file is closed, and dd
	// conv=fsync succeeds.
	sh(t, a.Dir(), `python3 -c '
import os, subprocess, sys
fd = os.open("files/notes.txt", os.O_WRONLY | os.O_TRUNC)
os.write(fd, b"three\\n")
os.fsync(fd)
seen = subprocess.run(["cat", "files/notes.txt"], capture_output=True).stdout
os.close(fd)
sys.exit(0 if seen == b"three\\n" else "before close, another reader saw %r" % seen)
'`)
	if out, err := shErr(a.Dir(), "printf 'four\\n' | dd of=files/notes.txt conv=fsync status=none && cat files/notes.txt"); err != nil || out != "four\n" {
		t.Fatalf("dd conv=fsync: %q %v", out, err)
	}
	sh(t, a.Dir(), "printf 'two\\n' > files/notes.txt")
	// rm on A: gone from A, also after the folder's next refreshes, and
	// still on B.
	sh(t, a.Dir(), "rm files/notes.txt")
	if out, err := shErr(a.Dir(), "rm files/notes.txt"); err == nil || !strings.Contains(out, "No such file") {
		t.Fatalf("a second rm: %q %v", out, err)
	}
	time.Sleep(2500 * time.Millisecond) // longer than the folder's refresh period
	if ls := sh(t, a.Dir(), "ls files"); ls != "" {
		t.Fatalf("files/ on A after rm: %q", ls)
	}
	if got := sh(t, b.Dir(), "cat files/notes.txt"); got != "two\n" {
		t.Fatalf("B reads %q after A's rm", got)
	}
	// The token opens it again on A.
	sh(t, a.Dir(), "touch 'files/"+token+"'")
	waitRead(t, a, "notes.txt", "two\n")
}

// TestFilesTruncate: a shorter content written with > replaces a longer
// one whole (the kernel sends O_TRUNC as a truncation without a handle),
// as do truncate(1) by path, to a shorter or a longer size, and
// ftruncate on an open file.
func TestFilesTruncate(t *testing.T) {
	a := moMounts(t, 1)[0]
	for _, tc := range []struct{ script, want string }{
		{"printf 'a longer first content\\n' > files/t.txt", "a longer first content\n"},
		{"printf 'short\\n' > files/t.txt", "short\n"},
		{"printf 'more\\n' >> files/t.txt", "short\nmore\n"},
		{"printf 'x\\n' | dd of=files/t.txt status=none", "x\n"},
		{"truncate -s 1 files/t.txt", "x"},
		{"truncate -s 3 files/t.txt", "x\x00\x00"},
		{": > files/t.txt", ""},
		{"printf 'again\\n' > files/t.txt && python3 -c 'import os; fd = os.open(\"files/t.txt\", os.O_RDWR); os.ftruncate(fd, 2); os.close(fd)'", "ag"},
	} {
		sh(t, a.Dir(), tc.script)
		if got := sh(t, a.Dir(), "cat files/t.txt"); got != tc.want {
			t.Fatalf("after %s: %q, want %q", tc.script, got, tc.want)
		}
		if got := sh(t, a.Dir(), "stat -c %s files/t.txt"); got != fmt.Sprintf("%d\n", len(tc.want)) {
			t.Errorf("after %s: size %s, want %d", tc.script, got, len(tc.want))
		}
	}
}
