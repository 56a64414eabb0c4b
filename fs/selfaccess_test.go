package fs

import (
	"bytes"
	"log"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/liveobjects/liveobjects/channels"
)

// lockedBuffer is a bytes.Buffer that FUSE's serving goroutines may write
// to while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestMountLeavesItselfAlone: the serving process sends its mount no
// request of its own (go-fuse's WaitMount would open its poll hack's file
// in the mount), so that it can be killed at any moment: a process killed
// while its own request to its mount is being served can never exit. The
// FUSE debug log shows every request, and the hack's file opened by
// another process afterwards shows that the log would tell.
func TestMountLeavesItselfAlone(t *testing.T) {
	w := newWorld(t)
	var logged lockedBuffer
	prev := log.Writer()
	log.SetOutput(&logged)
	t.Cleanup(func() { log.SetOutput(prev) })
	const hack = ".go-fuse-epoll-hack"
	hub := channels.NewHub(dialRelay, channels.Options{})
	t.Cleanup(func() { hub.Close() })
	mnt := filepath.Join(t.TempDir(), "live")
	m, err := New(mnt, Config{Root: w.reg, Hub: hub, ChannelParams: map[string]string{"address": w.addr}, Debug: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if ls := sh(t, mnt, "ls"); !strings.Contains(ls, "channels") {
		t.Errorf("ls shows %q", ls)
	}
	got := logged.String()
	if !strings.Contains(got, `LOOKUP n1 ["channels"]`) && !strings.Contains(got, "READDIR") {
		t.Fatalf("the FUSE debug log shows no request of ls:\n%s", got)
	}
	if strings.Contains(got, hack) {
		t.Fatalf("the mount sent itself a request for %s:\n%s", hack, got)
	}
	sh(t, mnt, "cat "+hack+" >/dev/null 2>&1; true")
	if got := logged.String(); !strings.Contains(got, hack) {
		t.Fatalf("another process opened %s, and the FUSE debug log does not show it:\n%s", hack, got)
	}
}
