package fs

import (
	"context"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FileStore is a folder of distributed files (the micro-object file DAO)
// shown as files/ in the mount. Names, Size, ModTime and Token answer from
// memory; Read, Write and Remove may use the network.
type FileStore interface {
	Names() []string
	Size(name string) int64
	// ModTime is when the store last saw the file change (zero: unknown).
	ModTime(name string) time.Time
	// Token is the printed token that opens the file elsewhere ("":
	// none), shown as user.liveobject.token.
	Token(name string) string
	Read(ctx context.Context, name string) ([]byte, error)
	Write(ctx context.Context, name string, data []byte) error
	// Remove takes the file out of the store (rm).
	Remove(ctx context.Context, name string) error
}

// FileStoreSwitch is a FileStore that can be off (its server not
// running): files/ is listed, and can be looked up, only while On reports
// true. On must answer from memory.
type FileStoreSwitch interface {
	FileStore
	On() bool
}

// filesOn reports whether files/ is shown now.
func (m *Mount) filesOn() bool {
	if m.cfg.Files == nil {
		return false
	}
	if sw, ok := m.cfg.Files.(FileStoreSwitch); ok {
		return sw.On()
	}
	return true
}

// filesDir is the files/ folder.
type filesDir struct {
	gofs.Inode
	m *Mount
}

var (
	_ gofs.NodeLookuper  = (*filesDir)(nil)
	_ gofs.NodeReaddirer = (*filesDir)(nil)
	_ gofs.NodeGetattrer = (*filesDir)(nil)
	_ gofs.NodeCreater   = (*filesDir)(nil)
	_ gofs.NodeUnlinker  = (*filesDir)(nil)
)

func (d *filesDir) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.m.dirAttr(&out.Attr)
	return 0
}

func (d *filesDir) has(name string) bool {
	for _, n := range d.m.cfg.Files.Names() {
		if n == name {
			return true
		}
	}
	return false
}

func (d *filesDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	var out []fuse.DirEntry
	for _, n := range d.m.cfg.Files.Names() {
		out = append(out, fuse.DirEntry{Name: n, Mode: syscall.S_IFREG, Ino: ino('m', n)})
	}
	return gofs.NewListDirStream(out), 0
}

func (d *filesDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !d.has(name) {
		return nil, syscall.ENOENT
	}
	f := &storeFile{m: d.m, name: name}
	f.attr(&out.Attr)
	return d.NewInode(ctx, f, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ino('m', name)}), 0
}

func (d *filesDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	f := &storeFile{m: d.m, name: name}
	f.attr(&out.Attr)
	inode := d.NewInode(ctx, f, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ino('m', name)})
	h := &storeHandle{f: f, write: true, dirty: true}
	d.m.storeOpen.add(name, h)
	return inode, h, fuse.FOPEN_DIRECT_IO, 0
}

// storeHandles are the open handles of files/, by name.
type storeHandles struct {
	mu     sync.Mutex // protects byName
	byName map[string]map[*storeHandle]struct{}
}

func (s *storeHandles) add(name string, h *storeHandle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byName == nil {
		s.byName = map[string]map[*storeHandle]struct{}{}
	}
	if s.byName[name] == nil {
		s.byName[name] = map[*storeHandle]struct{}{}
	}
	s.byName[name][h] = struct{}{}
}

func (s *storeHandles) remove(name string, h *storeHandle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byName[name], h)
	if len(s.byName[name]) == 0 {
		delete(s.byName, name)
	}
}

// writers returns the handles of name open for writing.
func (s *storeHandles) writers(name string) []*storeHandle {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*storeHandle
	for h := range s.byName[name] {
		if h.write {
			out = append(out, h)
		}
	}
	return out
}

// Unlink takes a file out of the store. Without it, go-fuse would answer
// rm with success and leave the file in place.
func (d *filesDir) Unlink(ctx context.Context, name string) syscall.Errno {
	if !d.has(name) {
		return syscall.ENOENT
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return errno("remove file", "files/"+name, d.m.cfg.Files.Remove(rctx, name))
}

// storeFile is one distributed file.
type storeFile struct {
	gofs.Inode
	m    *Mount
	name string
}

var (
	_ gofs.NodeGetattrer   = (*storeFile)(nil)
	_ gofs.NodeSetattrer   = (*storeFile)(nil)
	_ gofs.NodeOpener      = (*storeFile)(nil)
	_ gofs.NodeGetxattrer  = (*storeFile)(nil)
	_ gofs.NodeListxattrer = (*storeFile)(nil)
)

// xattrToken is the attribute that gives a distributed file's token.
const xattrToken = xattrPrefix + "token"

func (f *storeFile) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr != xattrToken {
		return 0, syscall.ENODATA
	}
	t := f.m.cfg.Files.Token(f.name)
	if t == "" {
		return 0, syscall.ENODATA
	}
	return xattrValue([]byte(t), dest)
}

func (f *storeFile) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	if f.m.cfg.Files.Token(f.name) != "" {
		b = append([]byte(xattrToken), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

func (f *storeFile) attr(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | 0o664
	a.Nlink = 1
	a.Size = uint64(f.m.cfg.Files.Size(f.name))
	t := f.m.cfg.Files.ModTime(f.name)
	if t.IsZero() {
		t = f.m.start
	}
	a.SetTimes(&t, &t, &t)
}

func (f *storeFile) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.attr(&out.Attr)
	return 0
}

// Setattr truncates. With a handle (ftruncate), that handle's content is
// cut, and written back at its flush. Without one, the kernel truncates a
// path (truncate(2)) or ends an open with O_TRUNC (the kernel strips
// O_TRUNC from the open it sends, then truncates with no handle): every
// handle open for writing is cut, and when there is none the file's stored
// content is cut at once.
func (f *storeFile) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		if h, ok := fh.(*storeHandle); ok {
			h.truncate(sz)
		} else if ws := f.m.storeOpen.writers(f.name); len(ws) > 0 {
			for _, h := range ws {
				h.truncate(sz)
			}
		} else if eno := f.truncateStored(ctx, sz); eno != 0 {
			return eno
		}
	}
	f.attr(&out.Attr)
	return 0
}

// truncateStored cuts (or extends with zeros) the stored content to size.
func (f *storeFile) truncateStored(ctx context.Context, size uint64) syscall.Errno {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	data, err := f.m.cfg.Files.Read(rctx, f.name)
	if err != nil {
		return errno("truncate file", "files/"+f.name, err)
	}
	if uint64(len(data)) == size {
		return 0
	}
	data = resize(data, size)
	return publishErrno("truncate file", "files/"+f.name, f.m.cfg.Files.Write(rctx, f.name, data))
}

// resize cuts b to size, or extends it with zeros.
func resize(b []byte, size uint64) []byte {
	if uint64(len(b)) >= size {
		return b[:size]
	}
	return append(b, make([]byte, size-uint64(len(b)))...)
}

func (f *storeFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	h := &storeHandle{f: f, write: flags&syscall.O_ACCMODE != syscall.O_RDONLY}
	// O_TRUNC comes here only from kernels told of atomic O_TRUNC, which
	// go-fuse does not ask for; otherwise Setattr truncates after the open.
	if flags&syscall.O_TRUNC == 0 {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		data, err := f.m.cfg.Files.Read(rctx, f.name)
		cancel()
		if err != nil {
			return nil, 0, errno("read file", "files/"+f.name, err)
		}
		h.data = data
	} else {
		h.dirty = true
	}
	f.m.storeOpen.add(f.name, h)
	return h, fuse.FOPEN_DIRECT_IO, 0
}

// storeHandle holds a file's content from open to close: reads see the
// content at open, writes edit the copy, and the last flush writes it
// back as one new version.
type storeHandle struct {
	f     *storeFile
	write bool
	mu    sync.Mutex // protects data, dirty
	data  []byte
	dirty bool
}

var (
	_ gofs.FileReader   = (*storeHandle)(nil)
	_ gofs.FileWriter   = (*storeHandle)(nil)
	_ gofs.FileFlusher  = (*storeHandle)(nil)
	_ gofs.FileFsyncer  = (*storeHandle)(nil)
	_ gofs.FileReleaser = (*storeHandle)(nil)
)

// truncate cuts (or extends with zeros) the handle's content to size.
func (h *storeHandle) truncate(size uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.data = resize(h.data, size)
	h.dirty = true
}

// Release forgets the handle.
func (h *storeHandle) Release(ctx context.Context) syscall.Errno {
	h.f.m.storeOpen.remove(h.f.name, h)
	return 0
}

func (h *storeHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(int64(len(h.data)), off+int64(len(dest)))
	return fuse.ReadResultData(append([]byte(nil), h.data[off:end]...)), 0
}

func (h *storeHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if end := int(off) + len(data); end > len(h.data) {
		h.data = resize(h.data, uint64(end))
	}
	copy(h.data[off:], data)
	h.dirty = true
	return uint32(len(data)), 0
}

// Flush writes the content back when it changed, so that close(2) reports
// a failure.
func (h *storeHandle) Flush(ctx context.Context) syscall.Errno { return h.writeBack() }

// Fsync writes the content back when it changed: once fsync(2) returns,
// the server holds it (editors and dd conv=fsync call it before close).
func (h *storeHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno { return h.writeBack() }

// writeBack stores the handle's content as the file's new version when it
// changed since open or the last write back.
func (h *storeHandle) writeBack() syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.write || !h.dirty {
		return 0
	}
	wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.f.m.cfg.Files.Write(wctx, h.f.name, h.data); err != nil {
		return publishErrno("write file", "files/"+h.f.name, err)
	}
	h.dirty = false
	return 0
}
