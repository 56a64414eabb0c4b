package fs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/objects/logic"
	"github.com/liveobjects/liveobjects/registry"
	"github.com/liveobjects/liveobjects/transport"
)

// ChannelHistory is how many recent events a stream channel opened in
// channels/ keeps and shows a joiner, like the example chat object.
const ChannelHistory = 100

// liveSize is the size live files report: non-zero, so that file managers
// do not take them for empty text files and open an editor on them.
const liveSize = 4096

// errNotLive marks an object that cannot be joined (unknown class, or a
// class that has no object logic here, or a null object).
var errNotLive = errors.New("not a live object this build can join")

// errBadDefinition marks an object whose definition does not resolve
// (invalid file, dangling or cyclic reference, no channel); the error
// names the file and line.
var errBadDefinition = errors.New("the object's definition is broken (fix the file named; getfattr -n user.liveobject.error shows this message)")

func ino(kind byte, rel string) uint64 {
	h := fnv.New64a()
	h.Write([]byte{kind})
	h.Write([]byte(rel))
	return h.Sum64() | 1<<63 // away from the root's 1 and from small numbers
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// dirNode is a directory of the mount: the root, a folder of the root
// folder, or channels/.
type dirNode struct {
	gofs.Inode
	m   *Mount
	rel string
}

var (
	_ gofs.NodeLookuper   = (*dirNode)(nil)
	_ gofs.NodeReaddirer  = (*dirNode)(nil)
	_ gofs.NodeGetattrer  = (*dirNode)(nil)
	_ gofs.NodeCreater    = (*dirNode)(nil)
	_ gofs.NodeMkdirer    = (*dirNode)(nil)
	_ gofs.NodeUnlinker   = (*dirNode)(nil)
	_ gofs.NodeRmdirer    = (*dirNode)(nil)
	_ gofs.NodeAccesser   = (*dirNode)(nil)
	_ gofs.NodeGetxattrer = (*dirNode)(nil)
)

// Getxattr on the mount's top folder gives the root folder it shows
// (user.liveobject.root), so that tools reading definitions go to the
// files on disk instead of joining the live files.
func (d *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if d.rel != "" || attr != registry.MountRootAttr {
		return 0, syscall.ENODATA
	}
	return xattrValue([]byte(d.m.cfg.Root.Dir()), dest)
}

func xattrValue(v, dest []byte) (uint32, syscall.Errno) {
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (d *dirNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.m.dirAttr(&out.Attr)
	return 0
}

// Access answers without a round trip through permissions logic: the
// mount's own permissions are in the modes.
func (d *dirNode) Access(ctx context.Context, mask uint32) syscall.Errno { return 0 }

func (m *Mount) dirAttr(a *fuse.Attr) {
	a.Mode = syscall.S_IFDIR | 0o755
	a.Nlink = 2
	t := m.start
	a.SetTimes(&t, &t, &t)
}

func (d *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	list, ok := d.m.idx.list(d.rel)
	if !ok {
		return gofs.NewListDirStream(nil), 0
	}
	out := make([]fuse.DirEntry, 0, len(list))
	for _, e := range list {
		rel := join(d.rel, e.name)
		if rel == "files" && !d.m.filesOn() {
			continue
		}
		if e.dir {
			out = append(out, fuse.DirEntry{Name: e.name, Mode: syscall.S_IFDIR, Ino: ino('d', rel)})
		} else {
			out = append(out, fuse.DirEntry{Name: e.name, Mode: syscall.S_IFREG, Ino: ino('f', rel)})
		}
	}
	return gofs.NewListDirStream(out), 0
}

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	e, ok := d.m.idx.lookup(d.rel, name)
	if !ok || d.rel == "" && name == "files" && !d.m.filesOn() {
		return nil, syscall.ENOENT
	}
	return d.child(ctx, e, out), 0
}

func (d *dirNode) child(ctx context.Context, e dirent, out *fuse.EntryOut) *gofs.Inode {
	rel := join(d.rel, e.name)
	if rel == "files" && d.m.cfg.Files != nil {
		d.m.dirAttr(&out.Attr)
		return d.NewInode(ctx, &filesDir{m: d.m}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino('d', rel)})
	}
	if e.dir {
		d.m.dirAttr(&out.Attr)
		return d.NewInode(ctx, &dirNode{m: d.m, rel: rel}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino('d', rel)})
	}
	f := &fileNode{m: d.m, rel: rel}
	f.attr(&out.Attr)
	return d.NewInode(ctx, f, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ino('f', rel)})
}

// createChannel makes a channel from the shell (touch, mkdir, >).
func (d *dirNode) createChannel(ctx context.Context, name string) (objects.Metadata, syscall.Errno) {
	if !d.m.isFolder(d.rel) {
		return objects.Metadata{}, syscall.EROFS
	}
	name = strings.TrimSuffix(name, suffix)
	if name == "" || strings.HasPrefix(name, ".") {
		// Hidden names are a file manager's probes, not channels.
		return objects.Metadata{}, syscall.EPERM
	}
	if len(name) > registry.MaxChannelName {
		return objects.Metadata{}, syscall.ENAMETOOLONG
	}
	if md, ok := d.m.idx.channel(name); ok {
		return md, 0
	}
	md, err := d.m.cfg.Root.CreateChannel(name, "created from the shell", "")
	if err != nil {
		return md, errno("create channel", name, err)
	}
	d.m.idx.invalidate()
	if d.m.cfg.OnCreateChannel != nil {
		if err := d.m.cfg.OnCreateChannel(ctx, md); err != nil {
			return md, errno("create channel", name, err)
		}
	}
	return md, 0
}

func (d *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	md, eno := d.createChannel(ctx, name)
	if eno != 0 {
		return nil, nil, 0, eno
	}
	f := &fileNode{m: d.m, rel: join(d.rel, channelFileName(md))}
	f.attr(&out.Attr)
	inode := d.NewInode(ctx, f, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ino('f', f.rel)})
	fh, fl, eno := f.Open(ctx, flags)
	if eno != 0 {
		return nil, nil, 0, eno
	}
	return inode, fh, fl, 0
}

func (d *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if _, eno := d.createChannel(ctx, name); eno != 0 {
		return nil, eno
	}
	// The channel shows as NAME.liveobject; the directory the kernel
	// expects is an empty one that lives until its entry times out.
	rel := join(d.rel, name)
	d.m.dirAttr(&out.Attr)
	return d.NewInode(ctx, &dirNode{m: d.m, rel: rel}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino('d', rel)}), 0
}

func (d *dirNode) removeChannel(ctx context.Context, name string) syscall.Errno {
	if !d.m.isFolder(d.rel) {
		return syscall.EROFS
	}
	md, ok := d.m.idx.channel(name)
	if !ok {
		return syscall.ENOENT
	}
	id := md.ID
	if id == "" {
		id = md.Name
	}
	if err := d.m.cfg.Root.RemoveChannel(id); err != nil {
		return errno("remove channel", name, err)
	}
	d.m.idx.invalidate()
	for _, f := range d.m.folders {
		d.m.endReaders(join(f.Name, channelFileName(md)))
	}
	if d.m.cfg.OnRemoveChannel != nil {
		if err := d.m.cfg.OnRemoveChannel(ctx, md); err != nil {
			return errno("remove channel", name, err)
		}
	}
	return 0
}

func (d *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	return d.removeChannel(ctx, name)
}

func (d *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return d.removeChannel(ctx, name)
}

// fileNode is an object file: a live object, a channel, a service's state
// or a registry entry's definition.
type fileNode struct {
	gofs.Inode
	m   *Mount
	rel string
}

var (
	_ gofs.NodeGetattrer   = (*fileNode)(nil)
	_ gofs.NodeSetattrer   = (*fileNode)(nil)
	_ gofs.NodeOpener      = (*fileNode)(nil)
	_ gofs.NodeGetxattrer  = (*fileNode)(nil)
	_ gofs.NodeListxattrer = (*fileNode)(nil)
	_ gofs.NodeAccesser    = (*fileNode)(nil)
)

// Access is answered from the modes without a round trip.
func (f *fileNode) Access(ctx context.Context, mask uint32) syscall.Errno { return 0 }

// fileKind says how a file behaves.
type fileKind int

const (
	kindLive    fileKind = iota // joins an object
	kindChannel                 // joins a channel of channels/
	kindService                 // shows a service's state
	kindDef                     // shows a definition (registry entries, objects that cannot be joined)
)

func (f *fileNode) kind() fileKind {
	switch {
	case f.inFolder():
		return kindChannel
	case strings.HasPrefix(f.rel, "services/"):
		return kindService
	case strings.HasPrefix(f.rel, "registry/"):
		return kindDef
	}
	return kindLive
}

func (f *fileNode) inFolder() bool {
	_, ok := f.m.folder(f.rel)
	return ok
}

// static returns the content of a non-live file.
func (f *fileNode) static() []byte {
	switch f.kind() {
	case kindService:
		if f.m.cfg.ServiceStatus != nil {
			if b, ok := f.m.cfg.ServiceStatus(f.rel); ok {
				return b
			}
		}
		return []byte("not hosted by this daemon\n")
	case kindDef:
		return f.definition()
	}
	return nil
}

func (f *fileNode) definition() []byte {
	if f.kind() == kindChannel {
		md, ok := f.m.idx.channel(path.Base(f.rel))
		if !ok {
			return nil
		}
		b, err := md.Marshal()
		if err != nil {
			return []byte(err.Error())
		}
		return b
	}
	e, ok := f.m.cfg.Root.Lookup(f.rel)
	if !ok {
		return nil
	}
	if e.Def == nil {
		if e.Err != nil {
			return []byte(e.Err.Error() + "\n")
		}
		return nil
	}
	b, err := e.Def.MarshalFile()
	if err != nil {
		return []byte(err.Error() + "\n")
	}
	return b
}

// diskPath is where the file's definition lives in the root folder.
func (f *fileNode) diskPath() string {
	if f.kind() == kindChannel {
		if md, ok := f.m.idx.channel(path.Base(f.rel)); ok {
			id := md.ID
			if id == "" {
				id = md.Name
			}
			return filepath.Join(f.m.cfg.Root.Dir(), "channels", id, "metadata.xml")
		}
	}
	return filepath.Join(f.m.cfg.Root.Dir(), filepath.FromSlash(f.rel))
}

func (f *fileNode) attr(a *fuse.Attr) {
	a.Nlink = 1
	mtime := f.m.start
	if st, err := os.Stat(f.diskPath()); err == nil {
		mtime = st.ModTime()
	}
	switch f.kind() {
	case kindService, kindDef:
		a.Mode = syscall.S_IFREG | 0o444
		a.Size = uint64(len(f.static()))
	default:
		a.Mode = syscall.S_IFREG | 0o664
		a.Size = liveSize
		if t, ok := f.m.lastEvent(f.rel); ok && t.After(mtime) {
			mtime = t
		}
	}
	a.SetTimes(&mtime, &mtime, &mtime)
}

// lastEvent returns when the object at rel last changed, if it is joined.
func (m *Mount) lastEvent(rel string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for h := range m.handles[rel] {
		if h.live != nil {
			return h.live.Object().ModTime(), true
		}
	}
	return time.Time{}, false
}

func (f *fileNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.attr(&out.Attr)
	return 0
}

// Setattr accepts truncation (echo x > file), times (touch) and modes
// without effect on the object: a live file has no bytes to cut.
func (f *fileNode) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		if k := f.kind(); k == kindService || k == kindDef {
			return syscall.EACCES
		}
		if h, ok := fh.(*handle); ok && sz == 0 && h.w != nil {
			h.mu.Lock()
			h.w.Truncate()
			h.mu.Unlock()
		}
	}
	f.attr(&out.Attr)
	return 0
}

// spec works out what joining the file means.
func (f *fileNode) spec() (channels.Spec, error) {
	name := strings.TrimSuffix(path.Base(f.rel), suffix) // the object's name in messages
	if f.kind() == kindChannel {
		md, ok := f.m.idx.channel(path.Base(f.rel))
		if !ok {
			return channels.Spec{}, fmt.Errorf("%s: %w", f.rel, transport.ErrNoChannel)
		}
		folder, _ := f.m.folder(f.rel)
		kind, history := logic.Stream, folder.History
		// A channel folder shows a stream channel as its raw events, in
		// the order its driver gives them: it needs nothing more, unless
		// it keeps a history for joiners. A text or a variable is one
		// value that every member must see change alike, so it needs
		// what its class needs (a total order and state transfer), as
		// the objects that use it do.
		var needs transport.Guarantee
		if c, ok := objects.LookupClass(md.MessageClass); ok {
			if k, err := logic.ParseKind(string(c.Category)); err == nil {
				kind = k
			}
			if kind != logic.Stream {
				needs = c.Requires
			}
		}
		if kind == logic.Stream && history > 0 {
			needs |= transport.StateTransfer
		}
		typ := objects.Type{Requires: needs}
		key := md.ID
		if key == "" {
			key = md.Name
		}
		params := folder.Params
		if folder.Settings != nil {
			params = folder.Settings()
		}
		return channels.Spec{
			Object: f.rel, Driver: folder.Driver, Params: params,
			Channel: key, ChannelName: md.Name, Logic: logic.Config{Kind: kind, History: history},
			Check: func(driver string, provides transport.Guarantee) error {
				return typ.CheckDriver(name, md.Name, driver, provides)
			},
		}, nil
	}
	b, err := f.m.cfg.Root.Binding(f.rel)
	var rerr *registry.ResolveError
	switch {
	case err == nil:
	case errors.Is(err, objects.ErrUnknownClass), errors.Is(err, registry.ErrSwitchedOff):
		return channels.Spec{}, fmt.Errorf("%w: %w", errNotLive, err)
	case errors.Is(err, registry.ErrNotFound) && !errors.As(err, &rerr):
		// Removed from the root since it was looked up.
		return channels.Spec{}, fmt.Errorf("%w: %w", syscall.ENOENT, err)
	default:
		return channels.Spec{}, fmt.Errorf("%w: %w", errBadDefinition, err)
	}
	kind, err := logic.ParseKind(string(b.Class.Category))
	if err != nil {
		return channels.Spec{}, fmt.Errorf("%w: %s: class %s (%s): %w", errNotLive, f.rel, b.Class.Name, b.Class.ID, err)
	}
	typ := b.Type
	ch := b.ChannelName
	if ch == "" {
		ch = b.ChannelID
	}
	params := b.DriverParams
	if b.Driver == f.m.cfg.ChannelDriver && f.m.cfg.ChannelParams != nil {
		// A mount against a given substrate (--relay) overrides the
		// address in the definitions.
		params = f.m.cfg.ChannelParams
	}
	return channels.Spec{
		Object: f.rel, Driver: b.Driver, Params: params,
		Channel: b.ChannelID, ChannelName: ch,
		Logic: logic.Config{Kind: kind, History: b.History},
		Check: func(driver string, provides transport.Guarantee) error {
			return typ.CheckDriver(name, ch, driver, provides)
		},
	}, nil
}

func (f *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	const fl = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NONSEEKABLE | fuse.FOPEN_STREAM
	h := &handle{m: f.m, rel: f.rel}
	acc := flags & syscall.O_ACCMODE
	switch f.kind() {
	case kindService, kindDef:
		if acc != syscall.O_RDONLY {
			return nil, 0, syscall.EACCES
		}
		h.static = f.static()
		return h, fuse.FOPEN_DIRECT_IO, 0
	}
	spec, err := f.spec()
	if err != nil {
		f.m.setError(f.rel, err)
		return nil, 0, errno("open", f.rel, err)
	}
	live, err := f.m.cfg.Hub.Acquire(ctx, spec)
	if err != nil {
		f.m.setError(f.rel, err)
		return nil, 0, errno("join", f.rel, err)
	}
	f.m.setError(f.rel, nil)
	h.live = live
	if acc == syscall.O_RDONLY || acc == syscall.O_RDWR {
		h.r = live.Object().NewReader()
	}
	if acc == syscall.O_WRONLY || acc == syscall.O_RDWR {
		h.w = live.Object().NewWriter(live, f.m.maxEvent(ctx, spec))
	}
	if !f.m.addHandle(h) {
		h.closeAll()
		return nil, 0, syscall.ESHUTDOWN
	}
	return h, fl, 0
}

// defaultMaxEvent is the largest event a writer publishes over a driver
// that does not report its limit: the default limit of the relay and of
// QSM.
const defaultMaxEvent = 1 << 20

// eventLimiter is implemented by drivers that report the largest event
// they accept (the QSM client; the relay client, with the limit its relay
// announced).
type eventLimiter interface {
	MaxEvent() int
}

// maxEvent returns the largest event the driver carrying spec accepts.
// The driver is the one the object was just joined over (the hub keeps
// it), so this does not dial.
func (m *Mount) maxEvent(ctx context.Context, spec channels.Spec) int {
	d, err := m.cfg.Hub.Driver(ctx, spec)
	if err != nil {
		return defaultMaxEvent
	}
	if l, ok := d.(eventLimiter); ok {
		if n := l.MaxEvent(); n > 0 {
			return n
		}
	}
	return defaultMaxEvent
}

// Extended attributes, all under user.liveobject.*.
const xattrPrefix = "user.liveobject."

var xattrNames = []string{"id", "class", "category", "driver", "channel", "path", "definition", "error"}

func (f *fileNode) xattr(name string) ([]byte, bool) {
	if name == "user.mime_type" {
		return []byte("application/x-liveobject"), true
	}
	key, ok := strings.CutPrefix(name, xattrPrefix)
	if !ok {
		return nil, false
	}
	if key == "definition" {
		return f.definition(), true
	}
	if key == "error" {
		s := f.m.lastError(f.rel)
		return []byte(s), s != ""
	}
	if key == "path" {
		// Where the definition lives, relative to the root folder.
		rel, err := filepath.Rel(f.m.cfg.Root.Dir(), f.diskPath())
		return []byte(filepath.ToSlash(rel)), err == nil
	}
	if f.kind() == kindChannel {
		md, ok := f.m.idx.channel(path.Base(f.rel))
		if !ok {
			return nil, false
		}
		switch key {
		case "id":
			return []byte(md.ID), true
		case "class":
			return []byte(md.MessageClass), md.MessageClass != ""
		case "category":
			if c, ok := objects.LookupClass(md.MessageClass); ok {
				return []byte(c.Category), true
			}
			return []byte("stream"), true
		case "driver":
			folder, _ := f.m.folder(f.rel)
			return []byte(folder.Driver), true
		case "channel":
			return []byte(md.Name), true
		}
		return nil, false
	}
	e, ok := f.m.cfg.Root.Lookup(f.rel)
	if !ok || e.Def == nil {
		return nil, false
	}
	switch key {
	case "id":
		return []byte(e.Def.ID), e.Def.ID != ""
	}
	b, err := f.m.cfg.Root.Binding(f.rel)
	if err != nil {
		if key == "class" {
			return []byte(e.Def.ID), true
		}
		if key == "category" {
			return []byte("unknown"), true
		}
		return nil, false
	}
	switch key {
	case "class":
		return []byte(b.Class.ID + " " + b.Class.Name), true
	case "category":
		return []byte(b.Class.Category), true
	case "driver":
		return []byte(b.Driver), b.Driver != ""
	case "channel":
		if b.ChannelName != "" {
			return []byte(b.ChannelName + " " + b.ChannelID), true
		}
		return []byte(b.ChannelID), b.ChannelID != ""
	}
	return nil, false
}

func (f *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := f.xattr(attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	return xattrValue(v, dest)
}

func (f *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	for _, n := range xattrNames {
		if _, ok := f.xattr(xattrPrefix + n); ok {
			b = append(b, xattrPrefix+n...)
			b = append(b, 0)
		}
	}
	b = append(b, "user.mime_type"...)
	b = append(b, 0)
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

// setError remembers the last join error of a file for the
// user.liveobject.error attribute; nil clears it.
func (m *Mount) setError(rel string, err error) {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	if m.errs == nil {
		m.errs = map[string]string{}
	}
	if err == nil {
		delete(m.errs, rel)
		return
	}
	m.errs[rel] = err.Error()
}

func (m *Mount) lastError(rel string) string {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	return m.errs[rel]
}
