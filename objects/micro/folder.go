package micro

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// Folder shows the distributed files a server shares as a flat folder of
// named files, for the mount: listing never waits (it answers from a list
// refreshed in the background), reading gives a file's current content,
// writing replaces it (new content objects, flooded to the peers that
// share the file), creating a file named by a token opens a file shared
// by someone else, and removing a file stops this server's sharing of it.
//
// A Folder is safe for concurrent use. Writes and removals of one name
// are serialized (the last one wins), so that racing writes to a new name
// create one file. mu protects files, seen, gone and writing; a name's
// write lock is taken before mu, never while mu is held. One goroutine,
// started by NewFolder and stopped by Close, refreshes the list.
type Folder struct {
	lib   *Lib
	level int
	log   *slog.Logger

	mu      sync.Mutex
	files   map[string]*File     // by name
	seen    map[string]seenFile  // what the folder last saw of each file, by name
	gone    map[Token]bool       // files removed here, which the refresher must not bring back
	writing map[string]*nameLock // write locks of names being written

	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// NewFolder returns a Folder over lib's server; files written through it
// are flooded at level (2: changed clusters; 3: contents too).
func NewFolder(lib *Lib, level int, log *slog.Logger) *Folder {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Folder{lib: lib, level: level, log: log, files: map[string]*File{}, seen: map[string]seenFile{}, gone: map[Token]bool{},
		writing: map[string]*nameLock{}, kick: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go f.loop(ctx)
	return f
}

func (f *Folder) loop(ctx context.Context) {
	defer close(f.done)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := f.refresh(rctx); err != nil && ctx.Err() == nil {
			f.log.Warn("micro: folder refresh", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.kick:
		}
	}
}

// refresh lists the shared files and opens the new ones.
func (f *Folder) refresh(ctx context.Context) error {
	infos, err := SharedFiles(ctx, f.lib)
	if err != nil {
		return err
	}
	f.add(ctx, infos)
	return nil
}

// add opens the files of infos the folder does not hold yet, except those
// removed here: infos may have been listed before a removal.
func (f *Folder) add(ctx context.Context, infos []FileInfo) {
	for _, in := range infos {
		f.mu.Lock()
		_, known := f.files[in.Name]
		skip := known || f.gone[in.Token]
		f.mu.Unlock()
		if skip {
			continue
		}
		file, err := OpenFile(ctx, f.lib, in.Token)
		if err != nil {
			f.log.Warn("micro: open shared file", "name", in.Name, "err", err)
			continue
		}
		f.mu.Lock()
		if _, known := f.files[in.Name]; known || f.gone[in.Token] {
			f.mu.Unlock()
			file.Close()
			continue
		}
		f.files[in.Name] = file
		if _, ok := f.seen[in.Name]; !ok {
			f.seen[in.Name] = seenFile{mod: time.Now()}
		}
		f.mu.Unlock()
	}
}

// Names returns the names of the files, sorted. It never blocks on the
// network.
func (f *Folder) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.files))
	for n := range f.files {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Size returns the last known size of a file (0 when not read yet).
func (f *Folder) Size(name string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[name].size
}

// ModTime returns when the folder last saw a file's content change (a
// write through it, or a read that found other content than the read
// before), or, before that, when it listed the file; zero for a name it
// does not hold. Changes made elsewhere show at the next read.
func (f *Folder) ModTime(name string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[name].mod
}

// Token returns the printed token of a file (what another server's folder
// opens it with, as a file named by it), or "" for a name the folder does
// not hold. It never blocks on the network.
func (f *Folder) Token(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	file, ok := f.files[name]
	if !ok {
		return ""
	}
	return file.Token().String()
}

// Remove stops this server's sharing of a file and takes it out of the
// folder. Nothing is deleted: the file's objects stay until their
// copy-expire dates, the servers that share it keep it, and creating a
// file named by its token opens it again.
func (f *Folder) Remove(ctx context.Context, name string) error {
	unlock, err := f.lockName(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	file, ok := f.file(name)
	if !ok {
		return fmt.Errorf("micro: no shared file %q: %w", name, ErrNotFound)
	}
	if err := file.Share(ctx, -1); err != nil {
		return fmt.Errorf("micro: remove %q: %w", name, err)
	}
	f.mu.Lock()
	delete(f.files, name)
	delete(f.seen, name)
	f.gone[file.Token()] = true
	f.mu.Unlock()
	file.Close()
	return nil
}

// seenFile is what a Folder last saw of a file's content.
type seenFile struct {
	size int64
	sum  [sha256.Size]byte
	read bool      // sum and size are known
	mod  time.Time // when the folder listed the file, or last saw its content change
}

// saw notes content of name read or written now. A first read is not a
// change: the content may well be the one the file had when it was
// listed.
func (f *Folder) saw(name string, b []byte, written bool) {
	sum := sha256.Sum256(b)
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.seen[name]
	rec := seenFile{size: int64(len(b)), sum: sum, read: true, mod: old.mod}
	if !ok || written || (old.read && old.sum != sum) {
		rec.mod = time.Now()
	}
	f.seen[name] = rec
}

// nameLock serializes the writes to one name.
type nameLock struct {
	held  chan struct{} // holds a value while a write has the lock
	users int           // writes holding or waiting for the lock; protected by Folder.mu
}

// lockName waits for the write lock of name, or for ctx to end. The
// returned function releases the lock.
func (f *Folder) lockName(ctx context.Context, name string) (func(), error) {
	f.mu.Lock()
	l := f.writing[name]
	if l == nil {
		l = &nameLock{held: make(chan struct{}, 1)}
		f.writing[name] = l
	}
	l.users++
	f.mu.Unlock()
	done := func() {
		f.mu.Lock()
		if l.users--; l.users == 0 {
			delete(f.writing, name)
		}
		f.mu.Unlock()
	}
	select {
	case l.held <- struct{}{}:
		return func() {
			<-l.held
			done()
		}, nil
	case <-ctx.Done():
		done()
		return nil, fmt.Errorf("micro: write %q: waiting for an earlier write to it: %w", name, ctx.Err())
	}
}

func (f *Folder) file(name string) (*File, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	file, ok := f.files[name]
	return file, ok
}

// Read returns a file's current content.
func (f *Folder) Read(ctx context.Context, name string) ([]byte, error) {
	file, ok := f.file(name)
	if !ok {
		return nil, fmt.Errorf("micro: no shared file %q: %w", name, ErrNotFound)
	}
	if err := file.Refresh(ctx); err != nil {
		f.log.Debug("micro: refresh before read", "name", name, "err", err)
	}
	b, err := file.ReadAll(ctx)
	if err != nil {
		return nil, err
	}
	f.saw(name, b, false)
	return b, nil
}

// Write replaces a file's content, creating the file (home: this server)
// when it does not exist. A name that is a token opens the file it names
// instead, and data must be empty then; a new name with the shape of a
// token that is not one is refused. Writes to one name run one at a
// time, in the order they get its lock.
func (f *Folder) Write(ctx context.Context, name string, data []byte) error {
	unlock, err := f.lockName(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	file, ok := f.file(name)
	if !ok {
		if t, err := ParseToken(name); err == nil {
			if len(data) != 0 {
				return fmt.Errorf("micro: %q names a file by its token; create it empty to open it, then write to it by its name", name)
			}
			return f.Open(ctx, t)
		} else if tokenShaped(name) {
			// Most likely a token copied with a typo: a new file named
			// by it would hide the mistake.
			return fmt.Errorf("micro: %q has the shape of a token but is not one (%w): check the token, or give the new file another name", name, err)
		}
		nf, err := CreateFile(ctx, f.lib, name, data, FileOptions{})
		if err != nil {
			return err
		}
		if err := nf.Share(ctx, f.level); err != nil {
			nf.Close()
			return err
		}
		f.mu.Lock()
		if old, ok := f.files[name]; ok {
			old.Close() // opened meanwhile by the refresher
		}
		f.files[name] = nf
		f.mu.Unlock()
		f.saw(name, data, true)
		return nil
	}
	if err := file.Write(ctx, data); err != nil {
		return err
	}
	f.saw(name, data, true)
	return nil
}

// Open adds the file named by t (shared by another server) to the folder
// and starts flooding it at the folder's level.
func (f *Folder) Open(ctx context.Context, t Token) error {
	file, err := OpenFile(ctx, f.lib, t)
	if err != nil {
		return err
	}
	if err := file.Share(ctx, f.level); err != nil {
		file.Close()
		return err
	}
	f.mu.Lock()
	if old, ok := f.files[file.Name()]; ok {
		old.Close()
	}
	f.files[file.Name()] = file
	delete(f.gone, t)
	if _, ok := f.seen[file.Name()]; !ok {
		f.seen[file.Name()] = seenFile{mod: time.Now()}
	}
	f.mu.Unlock()
	return nil
}

// Close stops the refresher and closes the files.
func (f *Folder) Close() error {
	f.cancel()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, file := range f.files {
		file.Close()
	}
	f.files = map[string]*File{}
	return nil
}

// Tokens returns the token of each file, by name: what another server
// opens the file with.
func (f *Folder) Tokens() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]string, len(f.files))
	for n, file := range f.files {
		out[n] = file.Token().String()
	}
	return out
}
