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

// TestFilesFolder: a distributed file written on one mount is read on
// another, through two micro-object servers that flood it.
func TestFilesFolder(t *testing.T) {
	w := newWorld(t)
	keys, err := micro.NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := w.moMount(keys)
	b, _ := w.moMount(keys)
	sh(t, a.Dir(), "printf 'first version\\n' > files/notes.txt")
	if got := sh(t, a.Dir(), "cat files/notes.txt"); got != "first version\n" {
		t.Fatalf("read back on A: %q", got)
	}
	if ls := sh(t, a.Dir(), "ls -l files"); !strings.Contains(ls, "notes.txt") {
		t.Fatalf("ls files: %s", ls)
	}
	// B opens A's file by its token.
	var token string
	checkFor(t, 5*time.Second, 100*time.Millisecond, func() error {
		names := a.cfg.Files.(*micro.Folder).Tokens()
		token = names["notes.txt"]
		if token == "" {
			return fmt.Errorf("no token yet")
		}
		return nil
	})
	sh(t, b.Dir(), "touch 'files/"+token+"'")
	checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		got, err := shErr(b.Dir(), "cat files/notes.txt")
		if err != nil || got != "first version\n" {
			return fmt.Errorf("B reads %q %v", got, err)
		}
		return nil
	})
	// A write on B floods to A.
	sh(t, b.Dir(), "printf 'second version, from B\\n' > files/notes.txt")
	checkFor(t, 10*time.Second, 200*time.Millisecond, func() error {
		got, err := shErr(a.Dir(), "cat files/notes.txt")
		if err != nil || got != "second version, from B\n" {
			return fmt.Errorf("A reads %q %v", got, err)
		}
		return nil
	})
}
