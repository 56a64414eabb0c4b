package registry

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSpecialFiles: a FIFO, a device and a symbolic link to an endless
// device named like definitions are reported as problems; loading the
// root neither blocks on them nor reads them without end.
func TestSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "examples", "pipe"+Ext)
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "examples", "zero"+Ext)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "channels", "pipe"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "channels", "pipe", MetadataFile), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan *Root, 1)
	go func() {
		r, err := Open(dir)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	var r *Root
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		// Unblock the reader so that the test can end.
		for _, p := range []string{fifo, filepath.Join(dir, "channels", "pipe", MetadataFile)} {
			if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.Close()
			}
		}
		t.Fatal("Open blocks on a FIFO or an endless file in the root")
	}
	if r == nil {
		return
	}
	defer r.Close()
	want := map[string]bool{"examples/pipe" + Ext: false, "examples/zero" + Ext: false, "channels/pipe/" + MetadataFile: false}
	for _, p := range r.Problems() {
		if _, ok := want[p.File]; ok && strings.Contains(p.Msg, "not a regular file") {
			want[p.File] = true
		}
	}
	for f, seen := range want {
		if !seen {
			t.Errorf("no problem reported for %s", f)
		}
	}
	// The rest of the root is loaded.
	if _, ok := r.Lookup(RelayServiceFile); !ok {
		t.Error("services not loaded")
	}
}
