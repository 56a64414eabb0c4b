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
	return inode, &storeHandle{f: f, write: true, dirty: true}, fuse.FOPEN_DIRECT_IO, 0
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

func (f *storeFile) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		if h, ok := fh.(*storeHandle); ok {
			h.mu.Lock()
			if int(sz) < len(h.data) {
				h.data = h.data[:sz]
			}
			h.dirty = true
			h.mu.Unlock()
		}
	}
	f.attr(&out.Attr)
	return 0
}

func (f *storeFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	h := &storeHandle{f: f, write: flags&syscall.O_ACCMODE != syscall.O_RDONLY}
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
	_ gofs.FileReader  = (*storeHandle)(nil)
	_ gofs.FileWriter  = (*storeHandle)(nil)
	_ gofs.FileFlusher = (*storeHandle)(nil)
)

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
		h.data = append(h.data, make([]byte, end-len(h.data))...)
	}
	copy(h.data[off:], data)
	h.dirty = true
	return uint32(len(data)), 0
}

// Flush writes the content back when it changed, so that close(2) reports
// a failure.
func (h *storeHandle) Flush(ctx context.Context) syscall.Errno {
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
