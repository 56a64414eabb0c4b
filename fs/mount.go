package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/registry"
)

// Config says what to mount.
type Config struct {
	// Root is the loaded root folder; the mount follows its changes.
	Root *registry.Root
	// Hub joins live objects.
	Hub *channels.Hub
	// ChannelDriver and ChannelParams select the substrate for the files
	// in channels/ (default "relay" with the root's relay client address).
	ChannelDriver string
	ChannelParams map[string]string
	// Files, if set, is shown as files/: the distributed files of a
	// micro-object server.
	Files FileStore
	// Folders are more folders of channels over other substrates (e.g.
	// "qsm"): each shows the root's channels, joined over its driver.
	Folders []ChannelFolder
	// ServiceStatus, if set, gives the text shown when a file in services/
	// is read.
	ServiceStatus func(rel string) ([]byte, bool)
	// OnCreateChannel and OnRemoveChannel, if set, are called after a
	// channel was created or removed from the shell (touch, mkdir, rm), to
	// tell the substrate.
	OnCreateChannel func(ctx context.Context, md objects.Metadata) error
	OnRemoveChannel func(ctx context.Context, md objects.Metadata) error
	// PublishTimeout bounds a write's wait for the driver (0: 15s).
	PublishTimeout time.Duration
	// Debug logs every FUSE request.
	Debug bool
	// Logger receives messages (nil: slog.Default()).
	Logger *slog.Logger
}

// ChannelFolder is a top-level folder of the mount that shows the root's
// channels joined over one substrate.
type ChannelFolder struct {
	// Name is the folder's name ("channels", "qsm").
	Name string
	// Driver and Params select the substrate. Settings, if set, gives the
	// params at each join instead (so that edits of the definitions they
	// come from take effect).
	Driver   string
	Params   map[string]string
	Settings func() map[string]string
	// History is how many recent events a stream channel keeps for
	// joiners (only meaningful where the driver transfers state).
	History int
}

// Mount is a mounted folder of live objects.
type Mount struct {
	cfg    Config
	dir    string
	server *fuse.Server
	start  time.Time
	idx    *index
	// folders are the channel folders, channels/ first.
	folders []ChannelFolder

	mu      sync.Mutex // protects handles, closed
	handles map[string]map[*handle]struct{}
	closed  bool

	errMu sync.Mutex        // protects errs
	errs  map[string]string // rel -> last join error, for user.liveobject.error

	stopWatch func()
	watchDone chan struct{}
}

// folder returns the channel folder a path lies in.
func (m *Mount) folder(rel string) (ChannelFolder, bool) {
	dir, _, ok := strings.Cut(rel, "/")
	if !ok {
		return ChannelFolder{}, false
	}
	for _, f := range m.folders {
		if f.Name == dir {
			return f, true
		}
	}
	return ChannelFolder{}, false
}

// isFolder reports whether rel is a channel folder.
func (m *Mount) isFolder(rel string) bool {
	for _, f := range m.folders {
		if f.Name == rel {
			return true
		}
	}
	return false
}

// ErrStale reports a mountpoint left behind by a daemon that died.
var ErrStale = errors.New("fs: mountpoint is stale (its daemon died)")

// RecoverStale detaches a mountpoint whose daemon died ("Transport
// endpoint is not connected"). It reports whether it did.
func RecoverStale(dir string) (bool, error) {
	_, err := os.Stat(dir)
	if err == nil || !errors.Is(err, syscall.ENOTCONN) {
		return false, nil
	}
	if uerr := unmount(dir, true); uerr != nil {
		return false, fmt.Errorf("fs: %s: %w; unmounting it failed: %v (try: fusermount3 -uz %s)", dir, ErrStale, uerr, dir)
	}
	return true, nil
}

// unmount detaches dir: directly when root, else with fusermount3.
func unmount(dir string, lazy bool) error {
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	err := syscall.Unmount(dir, flags)
	if err == nil {
		return nil
	}
	for _, prog := range []string{"fusermount3", "fusermount"} {
		if p, lerr := exec.LookPath(prog); lerr == nil {
			args := []string{"-u", dir}
			if lazy {
				args = []string{"-uz", dir}
			}
			if out, ferr := exec.Command(p, args...).CombinedOutput(); ferr != nil {
				return fmt.Errorf("%s: %v: %s", prog, ferr, strings.TrimSpace(string(out)))
			}
			return nil
		}
	}
	return err
}

// Unmount detaches a mountpoint served by another process (liveobjects
// umount). With lazy it detaches even while files are open.
func Unmount(dir string, lazy bool) error { return unmount(dir, lazy) }

// New mounts cfg.Root at dir and starts serving it.
func New(dir string, cfg Config) (*Mount, error) {
	if cfg.Root == nil || cfg.Hub == nil {
		return nil, errors.New("fs: Config needs Root and Hub")
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ChannelDriver == "" {
		cfg.ChannelDriver = "relay"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if recovered, err := RecoverStale(abs); err != nil {
		return nil, err
	} else if recovered {
		cfg.Logger.Warn("mountpoint was left by a daemon that died; detached it", "mountpoint", abs)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("fs: create mountpoint: %w", err)
	}
	m := &Mount{cfg: cfg, dir: abs, start: time.Now(), handles: map[string]map[*handle]struct{}{}, watchDone: make(chan struct{})}
	m.folders = append([]ChannelFolder{{Name: "channels", Driver: cfg.ChannelDriver, Params: cfg.ChannelParams, History: ChannelHistory}}, cfg.Folders...)
	// Subscribe before the index is first built, so that a change made
	// while mounting invalidates it.
	ch, stop := cfg.Root.Subscribe()
	m.idx = newIndex(cfg.Root, m.folders)
	m.idx.withFiles = cfg.Files != nil

	sec := time.Second
	neg := 500 * time.Millisecond
	opts := &gofs.Options{
		EntryTimeout:    &sec,
		AttrTimeout:     &sec,
		NegativeTimeout: &neg,
		MountOptions: fuse.MountOptions{
			FsName:        "liveobjects",
			Name:          "liveobjects",
			DirectMount:   os.Geteuid() == 0,
			Debug:         cfg.Debug,
			MaxBackground: 64,
		},
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			if _, err2 := exec.LookPath("fusermount"); err2 != nil {
				return nil, errors.New("fs: mounting as a user needs fusermount3: install it (Debian: apt-get install fuse3), or run as root")
			}
		}
	}
	root := &dirNode{m: m, rel: ""}
	server, err := gofs.Mount(abs, root, opts)
	if err != nil {
		stop()
		return nil, fmt.Errorf("fs: mount %s: %w", abs, err)
	}
	m.server = server
	if err := server.WaitMount(); err != nil {
		stop()
		server.Unmount()
		return nil, fmt.Errorf("fs: mount %s: %w", abs, err)
	}
	m.stopWatch = stop
	go m.follow(ch)
	return m, nil
}

// Dir returns the mountpoint.
func (m *Mount) Dir() string { return m.dir }

// Wait blocks until the mount is unmounted.
func (m *Mount) Wait() { m.server.Wait() }

// follow applies the root's changes: the listing is rebuilt, readers of a
// removed object reach end of file.
func (m *Mount) follow(ch <-chan registry.Change) {
	defer close(m.watchDone)
	for c := range ch {
		m.idx.invalidate()
		if c.Kind == registry.Removed {
			m.endReaders(c.Path)
			if strings.HasPrefix(c.Path, "channels/") || c.Kind == registry.Resync {
				// A channel's metadata went away: its file's readers end.
				m.endChannelReaders()
			}
		}
	}
}

// endChannelReaders ends the readers of channel files whose channel no
// longer exists.
func (m *Mount) endChannelReaders() {
	m.mu.Lock()
	var gone []string
	for rel := range m.handles {
		if _, ok := m.folder(rel); ok {
			if _, exists := m.idx.channel(path.Base(rel)); !exists {
				gone = append(gone, rel)
			}
		}
	}
	m.mu.Unlock()
	for _, rel := range gone {
		m.endReaders(rel)
	}
}

func (m *Mount) endReaders(rel string) {
	m.mu.Lock()
	var hs []*handle
	for h := range m.handles[rel] {
		hs = append(hs, h)
	}
	m.mu.Unlock()
	for _, h := range hs {
		h.endRead()
	}
}

func (m *Mount) addHandle(h *handle) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	if m.handles[h.rel] == nil {
		m.handles[h.rel] = map[*handle]struct{}{}
	}
	m.handles[h.rel][h] = struct{}{}
	return true
}

func (m *Mount) removeHandle(h *handle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.handles[h.rel], h)
	if len(m.handles[h.rel]) == 0 {
		delete(m.handles, h.rel)
	}
}

// Close ends every reader (they see end of file), unmounts and waits for
// the server to stop. Files still held open by processes do not keep the
// mount alive: after a short grace the mount is detached lazily.
func (m *Mount) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var hs []*handle
	for _, set := range m.handles {
		for h := range set {
			hs = append(hs, h)
		}
	}
	m.mu.Unlock()
	for _, h := range hs {
		h.endRead()
	}
	m.stopWatch()
	<-m.watchDone
	var err error
	deadline := time.Now().Add(2 * time.Second)
	for isMounted(m.dir) {
		err = m.server.Unmount()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil && isMounted(m.dir) {
		m.cfg.Logger.Warn("unmount busy; detaching lazily", "mountpoint", m.dir, "err", err)
		if lerr := unmount(m.dir, true); lerr != nil {
			return fmt.Errorf("fs: unmount %s: %v; lazy unmount: %w", m.dir, err, lerr)
		}
	}
	done := make(chan struct{})
	go func() { m.server.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		return fmt.Errorf("fs: %s: server did not stop after unmount", m.dir)
	}
	return nil
}

// isMounted reports whether dir is a mountpoint in this mount namespace.
func isMounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return true // cannot tell: try to unmount
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.ReplaceAll(f[1], "\\040", " ") == dir {
			return true
		}
	}
	return false
}
