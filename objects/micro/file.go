package micro

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// The distributed file DAO of the paper (section 6). A file F is a micro
// object whose cluster holds block objects, ordered by copy-expire date;
// a block's cluster holds content objects; the content of a block is the
// payload of the last content object by copy-expire date; the file is the
// concatenation of its blocks. Writing creates new content objects (and
// blocks when the file grows); nothing is ever removed. Share the file
// with a flooding level: 2 floods changed block clusters, 3 also the new
// contents' payloads.

// Payload markers of the file DAO's objects.
const (
	fileMagic  = "liveobjects/mo-file v1\n"
	blockMagic = "liveobjects/mo-block v1\n"
)

// DefaultBlockSize is the block size of new files.
const DefaultBlockSize = 64 << 10

// FileOptions configure a new file.
type FileOptions struct {
	// BlockSize is the size of blocks (default DefaultBlockSize; at most
	// MaxPayload minus 1 KiB).
	BlockSize int
	// Lifetime is the copy-expire period of new objects (default 90 days).
	Lifetime time.Duration
}

func (o *FileOptions) defaults() {
	if o.BlockSize <= 0 {
		o.BlockSize = DefaultBlockSize
	}
	o.BlockSize = min(o.BlockSize, MaxPayload-1024)
	if o.Lifetime <= 0 {
		o.Lifetime = 90 * 24 * time.Hour
	}
}

// File is an open distributed file. It is safe for concurrent use; writes
// are serialized. Close stops the goroutine behind Changes.
type File struct {
	lib  *Lib
	mo   *MO
	name string
	opts FileOptions

	wmu sync.Mutex // serializes Write

	mu      sync.Mutex // protects changes, watchStop, closed
	changes chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
	closed  bool
}

// FileInfo describes a file a server shares.
type FileInfo struct {
	// Token names the file object.
	Token Token
	// Name is the file's name, from its payload.
	Name string
	// Flood is the local flooding level (-1: not flooded).
	Flood int
}

func filePayload(name string, blockSize int) []byte {
	return fmt.Appendf(nil, "%sname=%s\nblock=%d\n", fileMagic, strings.ReplaceAll(name, "\n", " "), blockSize)
}

func parseFilePayload(p []byte) (name string, blockSize int, ok bool) {
	rest, found := bytes.CutPrefix(p, []byte(fileMagic))
	if !found {
		return "", 0, false
	}
	for _, line := range strings.Split(string(rest), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "name":
			name = v
		case "block":
			fmt.Sscan(v, &blockSize)
		}
	}
	return name, blockSize, true
}

// CreateFile creates a file named name holding data, with this Lib's
// server as home.
func CreateFile(ctx context.Context, lib *Lib, name string, data []byte, opts FileOptions) (*File, error) {
	opts.defaults()
	now := time.Now()
	mo, err := lib.CreateNew(ctx, now.Add(opts.Lifetime), filePayload(name, opts.BlockSize))
	if err != nil {
		return nil, fmt.Errorf("micro: create file %q: %w", name, err)
	}
	f := &File{lib: lib, mo: mo, name: name, opts: opts}
	if err := f.Write(ctx, data); err != nil {
		return nil, err
	}
	return f, nil
}

// OpenFile opens the file named by t: it copies the file object and
// harmonizes the clusters of the file and its blocks with their homes.
// When the homes cannot be reached but the local server already holds the
// file's blocks, it opens the local copy.
func OpenFile(ctx context.Context, lib *Lib, t Token) (*File, error) {
	mo, err := lib.Get(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("micro: open file: %w", err)
	}
	name, bs, ok := parseFilePayload(mo.Payload())
	if !ok {
		return nil, fmt.Errorf("micro: open file %s: not a file object", t.Short())
	}
	f := &File{lib: lib, mo: mo, name: name, opts: FileOptions{BlockSize: bs}}
	f.opts.defaults()
	if err := f.Refresh(ctx); err != nil {
		if bl, lerr := clusterOf(ctx, lib.Local(), t); lerr != nil || len(bl) == 0 {
			return nil, err
		}
	}
	return f, nil
}

// Token returns the token of the file object.
func (f *File) Token() Token { return f.mo.Token() }

// Name returns the file's name.
func (f *File) Name() string { return f.name }

// Share starts flooding the file at level (2: changed block clusters; 3:
// also the new contents), so that the servers sharing it keep each other
// current. Level < 0 stops flooding.
func (f *File) Share(ctx context.Context, level int) error {
	if level < 0 {
		return f.mo.PutReplication(ctx, Policy{Kind: Flooding, Stop: true})
	}
	return f.mo.PutReplication(ctx, Policy{Kind: Flooding, Level: level})
}

// Refresh harmonizes the clusters of the file and its blocks with their
// home servers and the file's known peers. A file shared at level 2 or
// more is kept current by flooding and needs no refresh.
func (f *File) Refresh(ctx context.Context) error {
	local := f.lib.Local()
	if err := local.Sync(ctx, f.Token()); err != nil {
		return fmt.Errorf("micro: refresh file %q: %w", f.name, err)
	}
	blocks, err := clusterOf(ctx, local, f.Token())
	if err != nil {
		return err
	}
	for _, b := range blocks {
		if err := local.Sync(ctx, b); err != nil {
			return fmt.Errorf("micro: refresh file %q: block %s: %w", f.name, b.Short(), err)
		}
	}
	return nil
}

// blockContent returns the current content of block b and the token of
// its last content object (zero when empty).
func (f *File) blockContent(ctx context.Context, b Token) ([]byte, Token, error) {
	cs, err := clusterOf(ctx, f.lib.Local(), b)
	if err != nil {
		return nil, Token{}, err
	}
	if len(cs) == 0 {
		return nil, Token{}, nil
	}
	last := cs[len(cs)-1]
	c, err := f.lib.Get(ctx, last)
	if err != nil {
		return nil, last, fmt.Errorf("micro: file %q: content %s: %w", f.name, last.Short(), err)
	}
	return c.Payload(), last, nil
}

// ReadAll returns the file's current content as the local server knows
// it, fetching content payloads it lacks.
func (f *File) ReadAll(ctx context.Context) ([]byte, error) {
	blocks, err := clusterOf(ctx, f.lib.Local(), f.Token())
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, b := range blocks {
		p, _, err := f.blockContent(ctx, b)
		if err != nil {
			return nil, err
		}
		out = append(out, p...)
	}
	return out, nil
}

// Write replaces the file's content with data: every block whose content
// changes gets a new content object, new blocks are added when the file
// grows, and blocks past the end get empty content. The local server then
// floods the changes by the file's policy.
func (f *File) Write(ctx context.Context, data []byte) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	local := f.lib.Local()
	blocks, err := clusterOf(ctx, local, f.Token())
	if err != nil {
		return err
	}
	bs := f.opts.BlockSize
	nchunks := (len(data) + bs - 1) / bs
	now := time.Now()
	expireAfter := func(last Token) time.Time {
		e := now.Add(f.opts.Lifetime)
		if !last.IsZero() && e.UnixMilli() <= last.Expire().UnixMilli() {
			e = last.Expire().Add(time.Millisecond)
		}
		return e
	}
	var lastBlock Token
	if len(blocks) > 0 {
		lastBlock = blocks[len(blocks)-1]
	}
	for i := 0; i < max(nchunks, len(blocks)); i++ {
		var chunk []byte
		if i < nchunks {
			chunk = data[i*bs : min(len(data), (i+1)*bs)]
		}
		if i < len(blocks) {
			cur, last, err := f.blockContent(ctx, blocks[i])
			if err != nil {
				return err
			}
			if bytes.Equal(cur, chunk) {
				continue
			}
			c, err := f.lib.CreateNew(ctx, expireAfter(last), chunk)
			if err != nil {
				return fmt.Errorf("micro: write file %q: %w", f.name, err)
			}
			if _, err := local.Update(ctx, blocks[i], []Entry{NewEntry(f.lib.keys, blocks[i], c.Token())}); err != nil {
				return fmt.Errorf("micro: write file %q: block %d: %w", f.name, i, err)
			}
			continue
		}
		b, err := f.lib.CreateNew(ctx, expireAfter(lastBlock), []byte(blockMagic))
		if err != nil {
			return fmt.Errorf("micro: write file %q: %w", f.name, err)
		}
		lastBlock = b.Token()
		c, err := f.lib.CreateNew(ctx, expireAfter(Token{}), chunk)
		if err != nil {
			return fmt.Errorf("micro: write file %q: %w", f.name, err)
		}
		if err := b.Add(ctx, c.Token()); err != nil {
			return fmt.Errorf("micro: write file %q: %w", f.name, err)
		}
		if err := f.mo.Add(ctx, b.Token()); err != nil {
			return fmt.Errorf("micro: write file %q: %w", f.name, err)
		}
	}
	return nil
}

// Changes returns a channel that receives a value (coalesced) whenever
// the cluster of the file or of one of its blocks changes on the local
// server. The first call starts a watcher goroutine that Close stops; the
// channel is closed then.
func (f *File) Changes() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.changes != nil {
		return f.changes
	}
	f.changes = make(chan struct{}, 1)
	if f.closed {
		close(f.changes)
		return f.changes
	}
	ctx, cancel := context.WithCancel(f.lib.ctx)
	f.stop = cancel
	f.done = make(chan struct{})
	go f.watch(ctx, f.changes, f.done)
	return f.changes
}

func (f *File) watch(ctx context.Context, ch chan struct{}, done chan struct{}) {
	defer close(done)
	defer close(ch)
	local := f.lib.Local()
	seq, err := local.WaitChange(ctx, nil, 0)
	for ctx.Err() == nil {
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		watch := []Token{f.Token()}
		bl, _ := clusterOf(ctx, local, f.Token())
		watch = append(watch, bl...)
		var next uint64
		next, err = local.WaitChange(ctx, watch, seq)
		if err != nil {
			continue
		}
		seq = next
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Close stops the watcher behind Changes. It is idempotent.
func (f *File) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	stop, done := f.stop, f.done
	f.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	return nil
}

// SharedFiles lists the files that lib's server has replication policies
// for and that lib's keys open.
func SharedFiles(ctx context.Context, lib *Lib) ([]FileInfo, error) {
	sh, err := lib.Local().Shared(ctx)
	if err != nil {
		return nil, fmt.Errorf("micro: shared files: %w", err)
	}
	var out []FileInfo
	for _, s := range sh {
		m, err := lib.Get(ctx, s.Token)
		if err != nil {
			if errors.Is(err, ErrBadKeys) {
				continue
			}
			return out, err
		}
		if name, _, ok := parseFilePayload(m.Payload()); ok {
			out = append(out, FileInfo{Token: s.Token, Name: name, Flood: s.Flood})
		}
	}
	return out, nil
}
