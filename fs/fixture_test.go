package fs

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/registry"
	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/relay"
)

// world is a relay and a root folder that mounts share.
type world struct {
	t     testing.TB
	root  string
	reg   *registry.Root
	relay *relay.Server
	addr  string
}

func needFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse on this machine: the mount tests need FUSE")
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			t.Skip("not root and no fusermount3: install fuse3 to run the mount tests")
		}
	}
}

func newWorld(t testing.TB) *world {
	t.Helper()
	needFUSE(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := registry.Init(root); err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := reg.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	var infos []transport.ChannelInfo
	for _, md := range reg.Channels() {
		infos = append(infos, transport.ChannelInfo{ID: md.ID, Name: md.Name, Comment: md.Comment})
	}
	srv, err := relay.NewServer(relay.ServerConfig{Listen: "127.0.0.1:0", Channels: infos, AllowCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, root: root, reg: reg, relay: srv, addr: srv.Addr().String()}
	t.Cleanup(func() {
		srv.Close()
		cancel()
		reg.Close()
	})
	return w
}

func dialRelay(ctx context.Context, driver string, params map[string]string) (transport.Driver, error) {
	if driver != "relay" {
		return nil, fmt.Errorf("driver %q is not in this test", driver)
	}
	return relay.Dial(ctx, relay.ClientConfig{Addr: params["address"], Name: "fs-test"})
}

// mount mounts the world's root in a fresh directory, unmounted at cleanup.
func (w *world) mount() *Mount {
	w.t.Helper()
	hub := channels.NewHub(dialRelay, channels.Options{})
	mnt := filepath.Join(w.t.TempDir(), "live")
	params := map[string]string{"address": w.addr}
	m, err := New(mnt, Config{Root: w.reg, Hub: hub, ChannelDriver: "relay", ChannelParams: params})
	if err != nil {
		hub.Close()
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		if err := m.Close(); err != nil {
			w.t.Errorf("unmount: %v", err)
		}
		hub.Close()
	})
	return m
}

// sh runs a shell command line (real tools, a separate process) and
// returns its output; it fails the test on a non-zero exit.
func sh(t testing.TB, dir, script string) string {
	t.Helper()
	out, err := shErr(dir, script)
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return out
}

func shErr(dir, script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The shell changes into the mount itself: a child that chdirs into
	// a FUSE mount served by its parent can deadlock while forking.
	cmd := exec.CommandContext(ctx, "bash", "-c", "cd '"+dir+"' && "+script)
	// On timeout the whole process group goes: a child the shell waits for
	// (a cat blocked on a live file) would otherwise keep the output pipe
	// open and the test waiting after the shell was killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

// lineReader is a process (cat, by default) reading a live file, with its
// output lines collected.
type lineReader struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{} // closed when the process ended; err is set then
	err   error
}

func startReader(t *testing.T, dir string, args ...string) *lineReader {
	t.Helper()
	if len(args) == 1 {
		args = []string{"cat", args[0]}
	}
	for i, a := range args[1:] {
		if !filepath.IsAbs(a) && !strings.HasPrefix(a, "-") {
			args[i+1] = filepath.Join(dir, a)
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &lineReader{cmd: cmd, lines: make(chan string, 1<<16), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
		r.err = cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-r.done
	})
	return r
}

// expect reads n lines within the deadline.
func (r *lineReader) expect(t *testing.T, n int, within time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.After(within)
	for len(got) < n {
		select {
		case l, ok := <-r.lines:
			if !ok {
				t.Fatalf("reader ended after %d of %d lines: %q", len(got), n, tail(got))
			}
			got = append(got, l)
		case <-deadline:
			t.Fatalf("got %d of %d lines within %v: %q", len(got), n, within, tail(got))
		}
	}
	return got
}

func tail(s []string) []string {
	if len(s) > 5 {
		return s[len(s)-5:]
	}
	return s
}

// checkFor polls f until it returns nil or the time is up.
func checkFor(t *testing.T, within, step time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(step)
	}
}
