package registry

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/liveobjects/liveobjects/objects"
)

// Folders of a root.
const (
	ChannelsDir = "channels"
	RegistryDir = "registry"
	ServicesDir = "services"
	ExamplesDir = "examples"
	// MetadataFile is the name of a channel's metadata file.
	MetadataFile = "metadata.xml"
	// Ext is the extension of definition files.
	Ext = ".liveobject"
)

// Sentinel errors.
var (
	// ErrNotFound: no object, key or channel by that name.
	ErrNotFound = errors.New("registry: not found")
	// ErrDangling: a From names a registry key that has no definition.
	ErrDangling = errors.New("registry: dangling key")
	// ErrCycle: a chain of From references loops.
	ErrCycle = errors.New("registry: cycle in From chain")
	// ErrExists: a channel with that name, or a root, already exists.
	ErrExists = errors.New("registry: already exists")
	// ErrClosed: the Root was closed.
	ErrClosed = errors.New("registry: closed")
	// ErrNoChannel: an object that runs over a channel names none.
	ErrNoChannel = errors.New("registry: object names no channel")
	// ErrSwitchedOff: the object is a null object (a service switched off).
	ErrSwitchedOff = errors.New("registry: null object")
	// ErrNotClient: a channel's From chain does not reach a communication
	// client (the relay client folder or the QSM client).
	ErrNotClient = errors.New("registry: From chain does not reach a communication client")
)

// Problem is one problem in the root, with the file (relative to the
// root, "/" separators) and line it is on (0: the whole file).
type Problem struct {
	File string
	Line int
	Msg  string
}

// String prints "file:line: msg" (or "file: msg" without a line).
func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.File, p.Msg)
}

// Entry is one .liveobject file of the root.
type Entry struct {
	// Path is relative to the root, with "/" separators.
	Path string
	// Def is the last good definition. For a file that never parsed
	// cleanly it is what could be built (possibly nil), and Err is set.
	Def *objects.Object
	// Err is the file's first current problem, if any.
	Err error
}

type entry struct {
	Entry
	good  bool // Def came from a parse without problems
	sum   [32]byte
	probs []Problem
}

type channel struct {
	dir   string // folder name under channels/
	md    *objects.Metadata
	good  bool
	sum   [32]byte
	probs []Problem
}

// Root is a root folder loaded into memory. All methods are safe for
// concurrent use.
type Root struct {
	dir string

	// loadMu serializes loading (the watcher, CreateChannel,
	// RemoveChannel), so that an older read never replaces a newer one.
	// Lock order: loadMu, then subMu or mu; subMu before mu.
	loadMu sync.Mutex

	mu       sync.RWMutex        // protects the fields below
	entries  map[string]*entry   // rel path -> entry
	keys     map[string][]string // upper-case registry key -> sorted paths of registry/<KEY>/*.liveobject
	channels map[string]*channel // channel folder name -> channel
	walkErrs []Problem           // problems reading folders
	watching bool
	closed   bool

	subMu  sync.Mutex // protects subs and nextID
	subs   map[int]chan Change
	nextID int

	stop chan struct{} // closed by Close
	wg   sync.WaitGroup
	once sync.Once
	log  *slog.Logger
}

// MountRootAttr is the extended attribute of a mount's top folder that
// names the root folder the mount shows.
const MountRootAttr = "user.liveobject.root"

// ErrInMount reports a folder given as a root that lies in a mount.
var ErrInMount = errors.New("the folder is in a live-objects mount")

// Open loads every definition and channel below dir. Problems in files
// are collected (see Problems), not returned; Open fails only when dir is
// not a readable folder, or lies in a mount (ErrInMount).
func Open(dir string) (*Root, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("registry: open %s: %w", dir, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("registry: open %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("registry: open %s: not a folder", dir)
	}
	if top, root, ok := mountOf(abs); ok {
		// Reading its files would join every object, and wait on them.
		return nil, fmt.Errorf("registry: open %s: %w (the mount at %s shows the root %s): its files are live objects, not definitions; give the root folder %s instead", dir, ErrInMount, top, root, root)
	}
	r := &Root{
		dir:      abs,
		entries:  map[string]*entry{},
		keys:     map[string][]string{},
		channels: map[string]*channel{},
		subs:     map[int]chan Change{},
		stop:     make(chan struct{}),
		log:      slog.Default().With("root", abs),
	}
	r.scan("", nil)
	return r, nil
}

// Dir returns the root folder (absolute).
func (r *Root) Dir() string { return r.dir }

// Rel converts an absolute path below the root to a relative "/" path
// ("" for the root itself); it reports false for a path outside the root.
func (r *Root) Rel(abs string) (string, bool) {
	rel, err := filepath.Rel(r.dir, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", false
	}
	if rel == "." {
		return "", true
	}
	return filepath.ToSlash(rel), true
}

// Clean normalizes a user-supplied path to the form Lookup wants: relative
// to the root, "/" separators, no "./". An absolute path below the root
// is accepted too.
func (r *Root) Clean(p string) string {
	if filepath.IsAbs(p) {
		if rel, ok := r.Rel(filepath.Clean(p)); ok {
			return rel
		}
	}
	p = path.Clean(filepath.ToSlash(p))
	p = strings.TrimPrefix(p, "/")
	if p == "." {
		return ""
	}
	return p
}

// isDefinition reports whether rel names a definition file.
func isDefinition(rel string) bool { return strings.HasSuffix(rel, Ext) }

// channelDir returns the channel folder name if rel is
// channels/<X>/metadata.xml.
func channelDir(rel string) (string, bool) {
	parts := strings.Split(rel, "/")
	if len(parts) == 3 && parts[0] == ChannelsDir && parts[2] == MetadataFile {
		return parts[1], true
	}
	return "", false
}

// scan walks the folder rel (relative, "" for the root) and loads every
// file in it, reporting changes to notify (if non-nil). It also removes
// entries below rel whose file is gone.
func (r *Root) scan(rel string, notify func(Change)) {
	base := filepath.Join(r.dir, filepath.FromSlash(rel))
	seen := map[string]bool{}
	var walkErrs []Problem
	_ = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		rp, ok := r.Rel(p)
		if !ok {
			return nil
		}
		if err != nil {
			walkErrs = append(walkErrs, Problem{File: orRoot(rp), Msg: fmt.Sprintf("cannot read: %v", err)})
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if isChannelFolder(rp) {
				seen[rp+"/"+MetadataFile] = true
				r.loadChannel(path.Base(rp), notify)
			}
			return nil
		}
		if isDefinition(rp) {
			seen[rp] = true
			r.loadObject(rp, notify)
		}
		return nil
	})
	// Forget what is gone.
	prefix := rel
	if prefix != "" {
		prefix += "/"
	}
	r.mu.Lock()
	var gone []Change
	for p := range r.entries {
		if strings.HasPrefix(p, prefix) && !seen[p] {
			r.deleteEntry(p)
			gone = append(gone, Change{Kind: Removed, Path: p})
		}
	}
	for d := range r.channels {
		p := ChannelsDir + "/" + d + "/" + MetadataFile
		if strings.HasPrefix(p, prefix) && !seen[p] {
			delete(r.channels, d)
			gone = append(gone, Change{Kind: Removed, Path: p, Channel: d})
		}
	}
	// Folder problems below rel are replaced by this walk's.
	kept := r.walkErrs[:0:0]
	for _, p := range r.walkErrs {
		if rel != "" && p.File != rel && !strings.HasPrefix(p.File, prefix) {
			kept = append(kept, p)
		}
	}
	r.walkErrs = append(kept, walkErrs...)
	r.mu.Unlock()
	if notify != nil {
		for _, c := range gone {
			notify(c)
		}
	}
}

func orRoot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

// isChannelFolder reports whether rel is channels/<X>.
func isChannelFolder(rel string) bool {
	parts := strings.Split(rel, "/")
	return len(parts) == 2 && parts[0] == ChannelsDir
}

// readFile reads a regular file up to the size cap. It opens without
// blocking, so that a FIFO or a device that carries a definition's name
// (or a symbolic link to one) is reported instead of hanging the loader,
// and it never reads more than the cap, even from a file that grows.
func (r *Root) readFile(rel string) ([]byte, error) {
	f, err := os.OpenFile(filepath.Join(r.dir, filepath.FromSlash(rel)), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s); replace it with a file", st.Mode().Type())
	}
	if st.Size() > objects.MaxFileSize {
		return nil, fmt.Errorf("file is larger than %d bytes", objects.MaxFileSize)
	}
	buf := bytes.NewBuffer(make([]byte, 0, st.Size()+1))
	if _, err := buf.ReadFrom(io.LimitReader(f, objects.MaxFileSize+1)); err != nil {
		return nil, err
	}
	if buf.Len() > objects.MaxFileSize {
		return nil, fmt.Errorf("file is larger than %d bytes", objects.MaxFileSize)
	}
	return buf.Bytes(), nil
}

// loadObject (re)reads one definition file and reports what changed.
func (r *Root) loadObject(rel string, notify func(Change)) {
	data, err := r.readFile(rel)
	if errors.Is(err, fs.ErrNotExist) {
		r.forget(rel, notify)
		return
	}
	var def *objects.Object
	var probs []Problem
	var sum [32]byte
	if err != nil {
		probs = []Problem{{File: rel, Msg: fmt.Sprintf("cannot read: %v", err)}}
	} else {
		sum = sha256.Sum256(data)
		var perrs []*objects.ParseError
		def, perrs = objects.ParseObjectProblems(rel, bytes.NewReader(data))
		for _, p := range perrs {
			probs = append(probs, Problem{File: rel, Line: p.Line, Msg: p.Msg})
		}
	}
	r.mu.Lock()
	old, existed := r.entries[rel]
	if existed && err == nil && old.sum == sum {
		r.mu.Unlock()
		return
	}
	e := &entry{Entry: Entry{Path: rel}, sum: sum, probs: probs}
	switch {
	case len(probs) == 0:
		e.Def, e.good = def, true
	case existed && old.good:
		e.Def, e.good = old.Def, true // the last good definition stays in force
	default:
		e.Def = def
	}
	if len(probs) > 0 {
		e.Err = problemError{probs[0]}
	}
	r.setEntry(rel, e)
	r.mu.Unlock()
	if notify == nil {
		return
	}
	switch {
	case len(probs) > 0:
		r.log.Warn("registry: definition has a problem; the last good one stays in force", "problem", probs[0].String())
		notify(Change{Kind: ProblemFound, Path: rel})
	case !existed:
		notify(Change{Kind: Added, Path: rel})
	default:
		notify(Change{Kind: Changed, Path: rel})
	}
}

// forget removes the entry or channel at rel, or everything below rel if
// it was a folder.
func (r *Root) forget(rel string, notify func(Change)) {
	var gone []Change
	r.mu.Lock()
	if _, ok := r.entries[rel]; ok {
		r.deleteEntry(rel)
		gone = append(gone, Change{Kind: Removed, Path: rel})
	}
	if d, ok := channelDir(rel); ok {
		if _, ok := r.channels[d]; ok {
			delete(r.channels, d)
			gone = append(gone, Change{Kind: Removed, Path: rel, Channel: d})
		}
	}
	prefix := rel + "/"
	if rel == "" {
		prefix = ""
	}
	for p := range r.entries {
		if strings.HasPrefix(p, prefix) {
			r.deleteEntry(p)
			gone = append(gone, Change{Kind: Removed, Path: p})
		}
	}
	for d := range r.channels {
		p := ChannelsDir + "/" + d
		if p == rel || strings.HasPrefix(p+"/", prefix) {
			delete(r.channels, d)
			gone = append(gone, Change{Kind: Removed, Path: p + "/" + MetadataFile, Channel: d})
		}
	}
	r.mu.Unlock()
	if notify != nil {
		sort.Slice(gone, func(i, j int) bool { return gone[i].Path < gone[j].Path })
		for _, c := range gone {
			notify(c)
		}
	}
}

// loadChannel (re)reads channels/<dir>/metadata.xml.
func (r *Root) loadChannel(dir string, notify func(Change)) {
	rel := ChannelsDir + "/" + dir + "/" + MetadataFile
	data, err := r.readFile(rel)
	var md *objects.Metadata
	var probs []Problem
	var sum [32]byte
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(filepath.Join(r.dir, ChannelsDir, dir)); serr != nil {
			r.forget(rel, notify)
			return
		}
		probs = []Problem{{File: ChannelsDir + "/" + dir, Msg: "channel folder has no " + MetadataFile}}
	case err != nil:
		probs = []Problem{{File: rel, Msg: fmt.Sprintf("cannot read: %v", err)}}
	default:
		sum = sha256.Sum256(data)
		var perr error
		md, perr = objects.ParseMetadata(rel, bytes.NewReader(data))
		var pe *objects.ParseError
		if errors.As(perr, &pe) {
			probs = append(probs, Problem{File: rel, Line: pe.Line, Msg: pe.Msg})
		} else if perr != nil {
			probs = append(probs, Problem{File: rel, Msg: perr.Error()})
		}
		if md != nil && perr == nil && !strings.EqualFold(md.ID, dir) && !strings.EqualFold(md.Name, dir) {
			probs = append(probs, Problem{File: rel, Line: md.Line, Msg: fmt.Sprintf("ID %s matches neither the folder name %q nor the channel name %q", md.ID, dir, md.Name)})
		}
	}
	r.mu.Lock()
	old, existed := r.channels[dir]
	if existed && md != nil && old.sum == sum && len(probs) == 0 && old.good {
		r.mu.Unlock()
		return
	}
	c := &channel{dir: dir, sum: sum, probs: probs}
	switch {
	case len(probs) == 0:
		c.md, c.good = md, true
	case existed && old.good:
		c.md, c.good = old.md, true
	}
	r.channels[dir] = c
	r.mu.Unlock()
	if notify == nil {
		return
	}
	switch {
	case len(probs) > 0:
		r.log.Warn("registry: channel has a problem; the last good metadata stays in force", "problem", probs[0].String())
		notify(Change{Kind: ProblemFound, Path: rel, Channel: dir})
	case !existed || !old.good:
		notify(Change{Kind: Added, Path: rel, Channel: dir})
	default:
		notify(Change{Kind: Changed, Path: rel, Channel: dir})
	}
}

// problemError is a Problem as an error.
type problemError struct{ p Problem }

func (e problemError) Error() string { return e.p.String() }

// Is makes errors.Is(err, objects.ErrInvalid) true for file problems.
func (e problemError) Is(target error) bool { return target == objects.ErrInvalid }

// Objects returns every .liveobject file below the root, sorted by path.
func (r *Root) Objects() []Entry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Entry, 0, len(r.entries))
	for _, e := range r.entries {
		out = append(out, e.Entry)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Lookup returns the entry for a path relative to the root ("/" or OS
// separators; an absolute path below the root works too).
func (r *Root) Lookup(rel string) (Entry, bool) {
	rel = r.Clean(rel)
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.entries[rel]
	if !ok {
		return Entry{}, false
	}
	return e.Entry, true
}

// Key returns the definition stored under registry/<key>/ (the key is
// case-insensitive; a versioned key is reduced to its id). When a key
// holds more than one file the first by name is returned and Problems
// reports the key.
func (r *Root) Key(key string) (Entry, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.keyLocked(key)
	if e == nil {
		return Entry{}, false
	}
	return e.Entry, true
}

func (r *Root) keyLocked(key string) *entry {
	files := r.keyFilesLocked(key)
	if len(files) == 0 {
		return nil
	}
	return files[0]
}

// keyFilesLocked lists the definitions under registry/<key>/, sorted.
func (r *Root) keyFilesLocked(key string) []*entry {
	paths := r.keys[strings.ToUpper(objects.BaseID(key))]
	out := make([]*entry, 0, len(paths))
	for _, p := range paths {
		out = append(out, r.entries[p])
	}
	return out
}

// registryKey returns the key of a path registry/<KEY>/<name>.liveobject.
func registryKey(rel string) (string, bool) {
	parts := strings.Split(rel, "/")
	if len(parts) == 3 && parts[0] == RegistryDir && isDefinition(rel) {
		return strings.ToUpper(parts[1]), true
	}
	return "", false
}

// setEntry stores e at rel and indexes its key (mu held).
func (r *Root) setEntry(rel string, e *entry) {
	if _, existed := r.entries[rel]; !existed {
		if k, ok := registryKey(rel); ok {
			r.keys[k] = append(r.keys[k], rel)
			sort.Strings(r.keys[k])
		}
	}
	r.entries[rel] = e
}

// deleteEntry removes rel and its key index (mu held).
func (r *Root) deleteEntry(rel string) {
	delete(r.entries, rel)
	if k, ok := registryKey(rel); ok {
		ps := r.keys[k]
		for i, p := range ps {
			if p == rel {
				ps = append(ps[:i:i], ps[i+1:]...)
				break
			}
		}
		if len(ps) == 0 {
			delete(r.keys, k)
		} else {
			r.keys[k] = ps
		}
	}
}

// Channels returns the channels of channels/ whose metadata parsed (at
// least once), sorted by name.
func (r *Root) Channels() []objects.Metadata {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []objects.Metadata
	for _, c := range r.channels {
		if c.md != nil {
			out = append(out, *c.md)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].DisplayName() != out[j].DisplayName() {
			return out[i].DisplayName() < out[j].DisplayName()
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Channel finds a channel by ID, folder name or Name (case-insensitive for
// IDs).
func (r *Root) Channel(idOrName string) (objects.Metadata, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c := r.channelLocked(idOrName)
	if c == nil {
		return objects.Metadata{}, false
	}
	return *c.md, true
}

func (r *Root) channelLocked(idOrName string) *channel {
	if c, ok := r.channels[idOrName]; ok && c.md != nil {
		return c
	}
	var byName *channel
	for _, c := range r.channels {
		if c.md == nil {
			continue
		}
		if strings.EqualFold(c.md.ID, idOrName) || strings.EqualFold(c.dir, idOrName) {
			return c
		}
		if c.md.Name == idOrName && byName == nil {
			byName = c
		}
	}
	return byName
}

// Close stops watching and closes every subscription. It is idempotent.
func (r *Root) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		close(r.stop)
		r.wg.Wait()
		r.subMu.Lock()
		for id, ch := range r.subs {
			close(ch)
			delete(r.subs, id)
		}
		r.subMu.Unlock()
	})
	return nil
}
