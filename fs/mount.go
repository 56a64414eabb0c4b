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
	"slices"
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
	// AllowNonEmpty mounts on a folder that holds files, hiding them
	// while mounted; without it New refuses such a folder (CheckMountpoint).
	AllowNonEmpty bool
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

	mu      sync.Mutex // protects handles, closedLines, settling, closed
	handles map[string]map[*handle]struct{}
	// closedLines are the handles of each object closed with a partial
	// line waiting (see handle.Flush), in the order they were closed.
	closedLines map[*channels.Live][]*handle
	// settling holds the lock of each object whose closed lines a write
	// is ending (settle), while any write holds or waits for it.
	settling map[*channels.Live]*settleLock
	closed   bool

	// storeOpen holds the open handles of files/, by name, for truncations
	// that come without a handle.
	storeOpen storeHandles

	errMu sync.Mutex        // protects errs
	errs  map[string]string // rel -> last join error, for user.liveobject.error

	stopWatch func()
	watchDone chan struct{}

	served chan struct{} // closed when the server has stopped

	// conn names the mount's FUSE connection in the control filesystem
	// ("" if unknown), to abort it when the mount cannot be unmounted.
	conn string
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

// ErrMounted reports a mountpoint where live objects are mounted already.
var ErrMounted = errors.New("live objects are mounted there already")

// ErrNotAnswering reports a mountpoint whose daemon does not answer.
var ErrNotAnswering = errors.New("the daemon serving it does not answer (stopped, or stuck)")

// answerTimeout bounds RecoverStale's wait for the daemon of a mountpoint.
const answerTimeout = 3 * time.Second

// RecoverStale detaches a mountpoint whose daemon died ("Transport
// endpoint is not connected"). It reports whether it did. When a daemon
// serves dir but does not answer within a few seconds (it was stopped, or
// is stuck), it returns an error wrapping ErrNotAnswering; the goroutine
// that asked stays blocked until the daemon answers or dies, or this
// process exits.
func RecoverStale(dir string) (bool, error) {
	asked := make(chan error, 1)
	go func() {
		_, err := os.Stat(dir)
		asked <- err
	}()
	var err error
	select {
	case err = <-asked:
	case <-time.After(answerTimeout):
		return false, fmt.Errorf("fs: %s: %w; wait for it, end it, or detach the mountpoint (liveobjects umount --lazy %s)", dir, ErrNotAnswering, dir)
	}
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

// ErrNotEmpty reports a mountpoint folder that holds files: a mount
// would hide them while mounted.
var ErrNotEmpty = errors.New("the folder is not empty, and a mount would hide what it holds")

// CheckMountpoint refuses a mountpoint that is a file, or, unless
// allowNonEmpty, a folder that holds files (an error wrapping
// ErrNotEmpty). A mountpoint with something mounted on it is left for New
// to judge (stale, or live objects already) and is not touched: its
// daemon may be stopped, and a stat of it would wait.
func CheckMountpoint(dir string, allowNonEmpty bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if _, mounted := mountedFS(abs); mounted {
		return nil
	}
	if st, err := os.Stat(abs); err == nil && !st.IsDir() {
		return fmt.Errorf("fs: mountpoint %s is a file, not a folder; give a folder (empty, or one that does not exist yet)", abs)
	}
	if allowNonEmpty {
		return nil
	}
	ents, err := os.ReadDir(abs)
	if err != nil || len(ents) == 0 {
		return nil // missing: New makes it
	}
	return fmt.Errorf("fs: mountpoint %s: %w (%d entries, %q among them); choose an empty folder, or allow it (--allow-non-empty)", abs, ErrNotEmpty, len(ents), ents[0].Name())
}

// ErrNotMounted reports a folder where nothing is mounted.
var ErrNotMounted = errors.New("nothing is mounted there")

// ErrOtherMount reports a mountpoint of something other than live
// objects.
var ErrOtherMount = errors.New("what is mounted there is not live objects")

// Unmount detaches a mountpoint of live objects served by another process
// (liveobjects umount). With lazy it detaches even while files are open.
// A folder where nothing is mounted, or where something else is, is left
// alone with an error wrapping ErrNotMounted or ErrOtherMount.
func Unmount(dir string, lazy bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	switch fstype, ok := mountedFS(abs); {
	case !ok:
		return fmt.Errorf("%s: %w", abs, ErrNotMounted)
	case fstype != "" && fstype != "fuse.liveobjects":
		return fmt.Errorf("%s: %w (it is %s; use umount)", abs, ErrOtherMount, fstype)
	}
	return unmount(abs, lazy)
}

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
	if fstype, ok := mountedFS(abs); ok && fstype == "fuse.liveobjects" {
		return nil, fmt.Errorf("fs: %s: %w; stop the daemon serving it, or unmount it (liveobjects umount %s), or choose another mountpoint", abs, ErrMounted, abs)
	}
	if err := CheckMountpoint(abs, cfg.AllowNonEmpty); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("fs: create mountpoint %s: %w", abs, err)
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
	// What gofs.Mount does, without WaitMount: NewServer returns once
	// the kernel's INIT is answered, the mount ready, and WaitMount's
	// poll hack opens a file in the mount from this process (see the
	// package documentation on deadlocks).
	server, err := fuse.NewServer(gofs.NewNodeFS(root, opts), abs, &opts.MountOptions)
	if err != nil {
		stop()
		return nil, fmt.Errorf("fs: mount %s: %w", abs, err)
	}
	m.server = server
	go server.Serve()
	m.stopWatch = stop
	m.served = make(chan struct{})
	go func() { server.Wait(); close(m.served) }()
	if dev, err := mountDev(abs); err == nil {
		m.conn, _ = connID(dev)
	}
	go m.follow(ch)
	return m, nil
}

// Dir returns the mountpoint.
func (m *Mount) Dir() string { return m.dir }

// Wait blocks until the mount is unmounted.
func (m *Mount) Wait() { <-m.served }

// follow applies the root's changes, in batches of every change already
// queued: the listing is rebuilt once per batch, and when a batch removes
// something or holds a Resync (this mount fell behind and changes were
// dropped, among them perhaps removals), the readers of every open file
// whose object is no longer in the root reach end of file.
func (m *Mount) follow(ch <-chan registry.Change) {
	defer close(m.watchDone)
	for c := range ch {
		batch := []registry.Change{c}
	more:
		for {
			select {
			case c, ok := <-ch:
				if !ok {
					break more
				}
				batch = append(batch, c)
			default:
				break more
			}
		}
		m.apply(batch)
	}
}

// apply applies one batch of the root's changes.
func (m *Mount) apply(batch []registry.Change) {
	m.idx.invalidate()
	for _, c := range batch {
		if c.Kind == registry.Removed || c.Kind == registry.Resync {
			m.endGoneReaders()
			return
		}
	}
}

// endGoneReaders ends the readers of open files whose object (definition
// or channel) is no longer in the root.
func (m *Mount) endGoneReaders() {
	m.mu.Lock()
	rels := make([]string, 0, len(m.handles))
	for rel := range m.handles {
		rels = append(rels, rel)
	}
	m.mu.Unlock()
	for _, rel := range rels {
		dir, name := path.Split(rel)
		if _, ok := m.idx.lookup(strings.TrimSuffix(dir, "/"), name); !ok {
			m.endReaders(rel)
		}
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

// addClosed notes h, closed with a partial line waiting.
func (m *Mount) addClosed(h *handle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closedLines == nil {
		m.closedLines = map[*channels.Live][]*handle{}
	}
	m.closedLines[h.live] = append(m.closedLines[h.live], h)
}

// dropClosed forgets that h was closed with a partial line.
func (m *Mount) dropClosed(h *handle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropClosedLocked(h)
}

func (m *Mount) dropClosedLocked(h *handle) {
	hs := slices.DeleteFunc(m.closedLines[h.live], func(o *handle) bool { return o == h })
	if len(hs) == 0 {
		delete(m.closedLines, h.live)
	} else {
		m.closedLines[h.live] = hs
	}
}

// settleLock serializes the writes that end one object's closed lines.
type settleLock struct {
	mu    sync.Mutex
	users int // writes holding or waiting for mu; under Mount.mu
}

// settle publishes, before h writes, the partial lines that other handles
// of its object were closed with, in the order they were closed: a
// process that wrote "a" without a newline and closed the file has its
// "a" before what is written after that. A handle written to again since
// its close keeps its line open. A line leaves closedLines only once it is
// published (endLine), so a write that starts meanwhile finds it and waits
// on the object's settleLock until it is in the order. Writes to other
// objects do not wait.
func (m *Mount) settle(h *handle) {
	m.mu.Lock()
	hs := m.closedLines[h.live]
	if len(hs) == 0 || len(hs) == 1 && hs[0] == h {
		m.mu.Unlock()
		return
	}
	if m.settling == nil {
		m.settling = map[*channels.Live]*settleLock{}
	}
	sl := m.settling[h.live]
	if sl == nil {
		sl = &settleLock{}
		m.settling[h.live] = sl
	}
	sl.users++
	m.mu.Unlock()

	sl.mu.Lock()
	m.mu.Lock()
	hs = slices.Clone(m.closedLines[h.live])
	m.mu.Unlock()
	for _, o := range hs {
		if o != h {
			o.endLine()
		}
	}
	// h, if it was among them, is written to now: its Write forgets it.
	sl.mu.Unlock()

	m.mu.Lock()
	if sl.users--; sl.users == 0 {
		delete(m.settling, h.live)
	}
	m.mu.Unlock()
}

func (m *Mount) removeHandle(h *handle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h.live != nil {
		m.dropClosedLocked(h)
	}
	delete(m.handles[h.rel], h)
	if len(m.handles[h.rel]) == 0 {
		delete(m.handles, h.rel)
	}
}

// Close ends every reader (they see end of file), unmounts and waits for
// the server to stop. Files still held open by processes, or a process's
// working directory in the mount, do not keep the daemon waiting: after a
// short grace the FUSE connection is aborted (those processes see
// ENOTCONN from then on) and the mount is detached lazily. Where the
// connection cannot be aborted (no FUSE control filesystem and not root),
// Close returns once the mount is detached, and the kernel ends the
// connection when the daemon exits.
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
		m.cfg.Logger.Warn("unmount busy (a process has a file open or its working directory in the mount); aborting the connection and detaching lazily", "mountpoint", m.dir, "err", err)
		m.abortConn()
		// The last process may have let go meanwhile, and the mount be
		// gone already: then the lazy unmount has nothing to detach.
		if lerr := unmount(m.dir, true); lerr != nil && isMounted(m.dir) {
			return fmt.Errorf("fs: unmount %s: %v; lazy unmount: %w (try: fusermount3 -uz %s)", m.dir, err, lerr, m.dir)
		}
	}
	if m.waitServer(2 * time.Second) {
		return nil
	}
	// Detached (here, or from outside with umount --lazy) but still held
	// by a process: end the connection.
	if m.abortConn() && m.waitServer(5*time.Second) {
		return nil
	}
	m.cfg.Logger.Warn("the mount is detached but processes still use it, and its connection could not be aborted (mount the FUSE control filesystem at "+fuseControl+" or run as root); it ends when this process exits", "mountpoint", m.dir)
	return nil
}

// waitServer waits up to d for the server to stop, and reports whether it
// did.
func (m *Mount) waitServer(d time.Duration) bool {
	select {
	case <-m.served:
		return true
	case <-time.After(d):
		return false
	}
}

// isMounted reports whether dir is a mountpoint in this mount namespace.
func isMounted(dir string) bool {
	_, ok := mountedFS(dir)
	return ok
}

// mountedFS returns the type of the filesystem mounted at dir (the
// topmost, with mounts stacked), and whether there is one. When
// /proc/self/mounts cannot be read it reports a mount of unknown type, so
// that callers try to unmount.
func mountedFS(dir string) (string, bool) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "", true
	}
	fstype, ok := "", false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && unescapeMount(f[1]) == dir {
			fstype, ok = f[2], true
		}
	}
	return fstype, ok
}
