package fs

import (
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/registry"
)

// suffix is the extension of object files.
const suffix = ".liveobject"

// dirent is one entry of a directory listing.
type dirent struct {
	name string
	dir  bool
}

// index is the mount's listing of the root, rebuilt from the registry's
// in-memory model after each change. Lookups and listings never touch the
// disk or the network.
type index struct {
	root      *registry.Root
	folders   []ChannelFolder
	withFiles bool // show files/

	mu       sync.Mutex // protects the fields below
	valid    bool
	dirs     map[string][]dirent         // rel dir -> sorted entries
	channels map[string]objects.Metadata // file name in channels/ -> metadata
}

func newIndex(root *registry.Root, folders []ChannelFolder) *index {
	return &index{root: root, folders: folders}
}

func (x *index) invalidate() {
	x.mu.Lock()
	x.valid = false
	x.mu.Unlock()
}

// channelFileName is the name a channel has in channels/.
func channelFileName(md objects.Metadata) string {
	name := md.Name
	if name == "" {
		name = md.ID
	}
	name = strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, name)
	return name + suffix
}

func (x *index) build() {
	if x.valid {
		return
	}
	sets := map[string]map[string]bool{"": {}} // dir -> name -> isDir
	add := func(dir, name string, isDir bool) {
		if sets[dir] == nil {
			sets[dir] = map[string]bool{}
		}
		sets[dir][name] = isDir
	}
	var addDirs func(d string)
	addDirs = func(d string) {
		if d == "" || d == "." {
			return
		}
		parent := path.Dir(d)
		if parent == "." {
			parent = ""
		}
		if _, ok := sets[parent][path.Base(d)]; ok {
			return
		}
		add(parent, path.Base(d), true)
		addDirs(parent)
	}
	for _, e := range x.root.Objects() {
		p := e.Path
		if strings.HasPrefix(p, "channels/") {
			continue
		}
		dir := path.Dir(p)
		if dir == "." {
			dir = ""
		}
		add(dir, path.Base(p), false)
		addDirs(dir)
	}
	x.channels = map[string]objects.Metadata{}
	for _, md := range x.root.Channels() {
		x.channels[channelFileName(md)] = md
	}
	for _, f := range x.folders {
		add("", f.Name, true)
		sets[f.Name] = map[string]bool{}
		for name := range x.channels {
			sets[f.Name][name] = false
		}
	}
	if x.withFiles {
		add("", "files", true)
	}
	x.dirs = map[string][]dirent{}
	for d, names := range sets {
		list := make([]dirent, 0, len(names))
		for n, isDir := range names {
			list = append(list, dirent{name: n, dir: isDir})
		}
		sort.Slice(list, func(i, j int) bool { return list[i].name < list[j].name })
		x.dirs[d] = list
	}
	x.valid = true
}

// list returns the entries of directory rel, and whether it exists.
func (x *index) list(rel string) ([]dirent, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.build()
	l, ok := x.dirs[rel]
	return l, ok
}

// lookup finds name in directory rel. In channels/ a name without the
// .liveobject suffix finds the channel too (so that "touch channels/x"
// can be followed by operations on "x").
func (x *index) lookup(rel, name string) (dirent, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.build()
	for _, e := range x.dirs[rel] {
		if e.name == name {
			return e, true
		}
	}
	if x.isFolder(rel) && !strings.HasSuffix(name, suffix) {
		if _, ok := x.channels[name+suffix]; ok {
			return dirent{name: name + suffix}, true
		}
	}
	return dirent{}, false
}

// channel returns the metadata of the channel shown as file name (with or
// without the suffix).
func (x *index) channel(name string) (objects.Metadata, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.build()
	if !strings.HasSuffix(name, suffix) {
		name += suffix
	}
	md, ok := x.channels[name]
	return md, ok
}

func (x *index) isFolder(rel string) bool {
	for _, f := range x.folders {
		if f.Name == rel {
			return true
		}
	}
	return false
}
