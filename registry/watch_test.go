package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/objects"
)

// within is how soon a change on disk must be in force.
const within = time.Second

// watched opens a fresh root, starts watching it and subscribes.
func watched(t *testing.T) (*Root, string, <-chan Change) {
	t.Helper()
	r, dir := openInit(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	ch, stop := r.Subscribe()
	t.Cleanup(stop)
	return r, dir, ch
}

// waitChange waits for a change of kind on path.
func waitChange(t *testing.T, ch <-chan Change, kind ChangeKind, path string) {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case c := <-ch:
			if c.Kind == kind && c.Path == path {
				return
			}
		case <-timeout:
			t.Fatalf("no %s change for %s within %v", kind, path, within)
		}
	}
}

func name(r *Root, rel string) (string, error) {
	e, ok := r.Lookup(rel)
	if !ok {
		return "", fmt.Errorf("%s not loaded", rel)
	}
	if e.Def == nil {
		return "", fmt.Errorf("%s has no definition (%v)", rel, e.Err)
	}
	return e.Def.Name(), nil
}

func TestWatch(t *testing.T) {
	r, dir, ch := watched(t)
	stream := objects.ClassStream
	chat := "00000000000000000000000000000002"

	t.Run("add", func(t *testing.T) {
		writeFile(t, dir, "examples/new.liveobject", objectXML(stream, "New", chat))
		waitChange(t, ch, Added, "examples/new.liveobject")
		if n, err := name(r, "examples/new.liveobject"); err != nil || n != "New" {
			t.Fatalf("%q %v", n, err)
		}
		if b, err := r.Binding("examples/new.liveobject"); err != nil || b.ChannelName != "chat" {
			t.Fatalf("binding %+v %v", b, err)
		}
	})
	t.Run("edit", func(t *testing.T) {
		writeFile(t, dir, "examples/new.liveobject", objectXML(stream, "Edited", chat))
		waitChange(t, ch, Changed, "examples/new.liveobject")
		if n, _ := name(r, "examples/new.liveobject"); n != "Edited" {
			t.Fatalf("name %q", n)
		}
	})
	t.Run("broken edit", func(t *testing.T) {
		writeFile(t, dir, "examples/new.liveobject", head+"<Object xsi:type=\"ReferenceObject\" id=\"1\">\n</Root>\n")
		waitChange(t, ch, ProblemFound, "examples/new.liveobject")
		e, _ := r.Lookup("examples/new.liveobject")
		if e.Err == nil || !strings.HasPrefix(e.Err.Error(), "examples/new.liveobject:4: ") {
			t.Fatalf("problem %v", e.Err)
		}
		if e.Def == nil || e.Def.Name() != "Edited" {
			t.Fatalf("last good definition not in force: %+v", e.Def)
		}
		if _, err := r.Binding("examples/new.liveobject"); err != nil {
			t.Fatalf("last good definition does not bind: %v", err)
		}
		found := false
		for _, p := range r.Problems() {
			found = found || p.File == "examples/new.liveobject" && p.Line == 4
		}
		if !found {
			t.Fatalf("problem not listed: %v", r.Problems())
		}
		// A second, different broken edit keeps the last good one too.
		writeFile(t, dir, "examples/new.liveobject", head+"<Object id=\"1\"/></Root>")
		waitChange(t, ch, ProblemFound, "examples/new.liveobject")
		if n, _ := name(r, "examples/new.liveobject"); n != "Edited" {
			t.Fatalf("name %q", n)
		}
		writeFile(t, dir, "examples/new.liveobject", objectXML(stream, "Fixed", chat))
		waitChange(t, ch, Changed, "examples/new.liveobject")
		if e, _ := r.Lookup("examples/new.liveobject"); e.Err != nil || e.Def.Name() != "Fixed" {
			t.Fatalf("fixed: %+v", e)
		}
	})
	t.Run("atomic save", func(t *testing.T) {
		// Editors write a temporary file and rename it over the original.
		tmp := filepath.Join(dir, "examples", ".new.liveobject.tmp")
		if err := os.WriteFile(tmp, []byte(objectXML(stream, "Saved", chat)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "examples", "new.liveobject")); err != nil {
			t.Fatal(err)
		}
		waitChange(t, ch, Changed, "examples/new.liveobject")
		if n, _ := name(r, "examples/new.liveobject"); n != "Saved" {
			t.Fatalf("name %q", n)
		}
	})
	t.Run("rename", func(t *testing.T) {
		if err := os.Rename(filepath.Join(dir, "examples", "new.liveobject"), filepath.Join(dir, "examples", "renamed one.liveobject")); err != nil {
			t.Fatal(err)
		}
		checkFor(t, within, 10*time.Millisecond, func() error {
			if _, ok := r.Lookup("examples/new.liveobject"); ok {
				return errors.New("old name still there")
			}
			if n, err := name(r, "examples/renamed one.liveobject"); err != nil || n != "Saved" {
				return fmt.Errorf("new name: %q %v", n, err)
			}
			return nil
		})
	})
	t.Run("remove", func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, "examples", "renamed one.liveobject")); err != nil {
			t.Fatal(err)
		}
		waitChange(t, ch, Removed, "examples/renamed one.liveobject")
		if _, ok := r.Lookup("examples/renamed one.liveobject"); ok {
			t.Fatal("removed file still listed")
		}
		// A removed broken file takes its problems with it.
		writeFile(t, dir, "examples/bad.liveobject", "<Root>")
		waitChange(t, ch, ProblemFound, "examples/bad.liveobject")
		if err := os.Remove(filepath.Join(dir, "examples", "bad.liveobject")); err != nil {
			t.Fatal(err)
		}
		waitChange(t, ch, Removed, "examples/bad.liveobject")
		for _, p := range r.Problems() {
			if p.File == "examples/bad.liveobject" {
				t.Fatalf("problem of a removed file: %v", p)
			}
		}
	})
	t.Run("new subfolder", func(t *testing.T) {
		// Files written right after the folders are made, before the
		// watcher can have added the new folders, are seen too.
		writeFile(t, dir, "examples/a b/c d/e f/deep.liveobject", objectXML(stream, "Deep", chat))
		waitChange(t, ch, Added, "examples/a b/c d/e f/deep.liveobject")
		// And later edits inside the new folders.
		writeFile(t, dir, "examples/a b/c d/e f/deeper.liveobject", objectXML(stream, "Deeper", chat))
		waitChange(t, ch, Added, "examples/a b/c d/e f/deeper.liveobject")
		writeFile(t, dir, "examples/a b/c d/e f/deeper.liveobject", objectXML(stream, "Deeper 2", chat))
		waitChange(t, ch, Changed, "examples/a b/c d/e f/deeper.liveobject")
	})
	t.Run("move folder in and out", func(t *testing.T) {
		outside := t.TempDir()
		writeFile(t, outside, "pack/x.liveobject", objectXML(stream, "X", chat))
		if err := os.Rename(filepath.Join(outside, "pack"), filepath.Join(dir, "examples", "pack")); err != nil {
			t.Fatal(err)
		}
		waitChange(t, ch, Added, "examples/pack/x.liveobject")
		if err := os.Rename(filepath.Join(dir, "examples", "a b"), filepath.Join(outside, "gone")); err != nil {
			t.Fatal(err)
		}
		waitChange(t, ch, Removed, "examples/a b/c d/e f/deep.liveobject")
		checkFor(t, within, 10*time.Millisecond, func() error {
			if _, ok := r.Lookup("examples/a b/c d/e f/deeper.liveobject"); ok {
				return errors.New("file of a moved-away folder still listed")
			}
			return nil
		})
	})
	t.Run("rename folder", func(t *testing.T) {
		writeFile(t, dir, "examples/old name/sub/f.liveobject", objectXML(stream, "F", chat))
		waitChange(t, ch, Added, "examples/old name/sub/f.liveobject")
		if err := os.Rename(filepath.Join(dir, "examples", "old name"), filepath.Join(dir, "examples", "new name")); err != nil {
			t.Fatal(err)
		}
		waitChange(t, ch, Added, "examples/new name/sub/f.liveobject")
		if _, ok := r.Lookup("examples/old name/sub/f.liveobject"); ok {
			t.Fatal("old name still listed")
		}
		// Edits below the renamed folder arrive under the new name.
		writeFile(t, dir, "examples/new name/sub/f.liveobject", objectXML(stream, "F2", chat))
		waitChange(t, ch, Changed, "examples/new name/sub/f.liveobject")
		writeFile(t, dir, "examples/new name/sub/g.liveobject", objectXML(stream, "G", chat))
		waitChange(t, ch, Added, "examples/new name/sub/g.liveobject")
	})
	t.Run("channels", func(t *testing.T) {
		md := objects.Metadata{ID: "0000000000000000000000000000000F", Name: "watched", MessageClass: stream, CheckpointClass: stream}
		data, _ := md.Marshal()
		rel := "channels/0000000000000000000000000000000F/metadata.xml"
		writeFile(t, dir, rel, string(data))
		waitChange(t, ch, Added, rel)
		if _, ok := r.Channel("watched"); !ok {
			t.Fatal("new channel not loaded")
		}
		writeFile(t, dir, rel, "<Metadata>")
		waitChange(t, ch, ProblemFound, rel)
		if _, ok := r.Channel("watched"); !ok {
			t.Fatal("last good channel metadata not in force")
		}
		if err := os.RemoveAll(filepath.Join(dir, "channels", "0000000000000000000000000000000F")); err != nil {
			t.Fatal(err)
		}
		waitChange(t, ch, Removed, rel)
		if _, ok := r.Channel("watched"); ok {
			t.Fatal("removed channel still there")
		}
	})
	t.Run("registry key", func(t *testing.T) {
		// Editing the relay client's address changes every binding.
		e, _ := r.Key(objects.KeyRelayClient)
		def := *e.Def
		def.Parameters = append([]objects.Parameter(nil), def.Parameters...)
		def.SetParam("address", objects.StringValue("127.0.0.1:61234"))
		data, _ := def.MarshalFile()
		writeFile(t, dir, e.Path, string(data))
		waitChange(t, ch, Changed, e.Path)
		if b, _ := r.Binding("examples/chat.liveobject"); b.DriverParams["address"] != "127.0.0.1:61234" {
			t.Fatalf("address %q", b.DriverParams["address"])
		}
		if err := os.Remove(filepath.Join(dir, filepath.FromSlash(e.Path))); err != nil {
			t.Fatal(err)
		}
		waitChange(t, ch, Removed, e.Path)
		if _, err := r.Binding("examples/chat.liveobject"); !errors.Is(err, ErrDangling) {
			t.Fatalf("binding without the client: %v", err)
		}
	})
	if err := r.Watch(context.Background()); !errors.Is(err, ErrWatching) {
		t.Errorf("second Watch: %v", err)
	}
}

func TestWatchStops(t *testing.T) {
	r, dir := openInit(t)
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	r.wg.Wait() // the watcher goroutine ends with its context
	writeFile(t, dir, "examples/after.liveobject", objectXML(objects.ClassStream, "After", ""))
	time.Sleep(3 * quietPeriod)
	if _, ok := r.Lookup("examples/after.liveobject"); ok {
		t.Errorf("watcher still running after its context ended")
	}
	r.Close()
	r.Close()
	if err := r.Watch(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close: %v", err)
	}
}

// TestWatchSeesChangesBeforeWatch checks that Watch rescans: a file
// added between Open and Watch is loaded.
func TestWatchSeesChangesBeforeWatch(t *testing.T) {
	r, dir := openInit(t)
	writeFile(t, dir, "examples/early.liveobject", objectXML(objects.ClassStream, "Early", ""))
	if err := r.Watch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, err := name(r, "examples/early.liveobject"); err != nil || n != "Early" {
		t.Errorf("%q %v", n, err)
	}
}

// TestWatchAgainAfterContextEnds checks that a watcher stopped by its
// context can be replaced by a new Watch, which picks up changes.
func TestWatchAgainAfterContextEnds(t *testing.T) {
	r, dir := openInit(t)
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	ctx2, cancel2 := context.WithCancel(context.Background())
	t.Cleanup(cancel2)
	checkFor(t, 2*time.Second, 10*time.Millisecond, func() error { return r.Watch(ctx2) })
	ch, stop := r.Subscribe()
	t.Cleanup(stop)
	writeFile(t, dir, "examples/again.liveobject", objectXML(objects.ClassStream, "Again", ""))
	waitChange(t, ch, Added, "examples/again.liveobject")
	if err := r.Watch(context.Background()); !errors.Is(err, ErrWatching) {
		t.Errorf("Watch while watching: %v", err)
	}
}
