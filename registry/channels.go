package registry

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/liveobjects/liveobjects/objects"
)

// classByName maps the names CreateChannel accepts for its class argument.
var classByName = map[string]string{
	"text":     objects.ClassText,
	"stream":   objects.ClassStream,
	"chat":     objects.ClassStream,
	"variable": objects.ClassVariable,
	"folder":   objects.ClassFolder,
}

// ClassID turns a class argument into a class id: a 32-hex-digit id (any
// case, versions dropped) or one of the names text, stream, variable,
// folder. Empty means stream.
func ClassID(class string) (string, error) {
	class = strings.TrimSpace(class)
	if class == "" {
		return objects.ClassStream, nil
	}
	if id, ok := classByName[strings.ToLower(class)]; ok {
		return id, nil
	}
	if id := objects.BaseID(class); objects.IsHexID(id) {
		return id, nil
	}
	return "", fmt.Errorf("registry: unknown class %q (want text, stream, variable, folder or a 32-hex-digit class id)", class)
}

// validChannelName rejects names that cannot be a file name or that would
// be confused with an ID.
// MaxChannelName is the longest channel name, in bytes: its folder in
// channels/ and the mount's file for it (with its suffix) stay under the
// kernel's 255.
const MaxChannelName = 200

func validChannelName(name string) error {
	switch {
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("registry: channel name %q contains '/' or NUL", name)
	case name == "." || name == "..":
		return fmt.Errorf("registry: channel name %q is not allowed", name)
	case len(name) > MaxChannelName:
		return fmt.Errorf("registry: channel name is longer than %d bytes", MaxChannelName)
	}
	return nil
}

// CreateChannel creates a channel with a fresh ID: it writes
// channels/<ID>/metadata.xml with the given name, comment and class (see
// ClassID) as message and checkpoint class. The new channel is in force
// when CreateChannel returns (watchers also see an Added change). A
// non-empty name must be unique (ErrExists).
func (r *Root) CreateChannel(name, comment string, class string) (objects.Metadata, error) {
	if err := validChannelName(name); err != nil {
		return objects.Metadata{}, err
	}
	cls, err := ClassID(class)
	if err != nil {
		return objects.Metadata{}, err
	}
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	r.mu.RLock()
	closed := r.closed
	var dup bool
	if name != "" {
		for _, c := range r.channels {
			if c.md != nil && (c.md.Name == name || strings.EqualFold(c.md.ID, name) || c.dir == name) {
				dup = true
			}
		}
	}
	r.mu.RUnlock()
	if closed {
		return objects.Metadata{}, ErrClosed
	}
	if dup {
		return objects.Metadata{}, fmt.Errorf("registry: create channel %q: %w", name, ErrExists)
	}
	md := objects.Metadata{ID: objects.NewChannelID(), Name: name, Comment: comment, MessageClass: cls, CheckpointClass: cls}
	if err := r.writeChannelLocked(md); err != nil {
		return objects.Metadata{}, fmt.Errorf("registry: create channel %q: %w", name, err)
	}
	return md, nil
}

// AddChannel writes the metadata of a channel that exists elsewhere (on a
// relay shared with other roots) under its own ID. A channel with that ID
// already in the root is left as it is (ErrExists).
func (r *Root) AddChannel(md objects.Metadata) error {
	if !objects.IsChannelID(md.ID) {
		return fmt.Errorf("registry: add channel %q: %q is not a channel ID (32 hex digits)", md.Name, md.ID)
	}
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	r.mu.RLock()
	closed := r.closed
	var dup bool
	for _, c := range r.channels {
		if c.md != nil && strings.EqualFold(c.md.ID, md.ID) {
			dup = true
		}
	}
	r.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if dup {
		return fmt.Errorf("registry: add channel %s: %w", md.ID, ErrExists)
	}
	if err := r.writeChannelLocked(md); err != nil {
		return fmt.Errorf("registry: add channel %s: %w", md.ID, err)
	}
	return nil
}

// writeChannelLocked writes channels/<ID>/metadata.xml and loads it.
// loadMu is held.
func (r *Root) writeChannelLocked(md objects.Metadata) error {
	data, err := md.Marshal()
	if err != nil {
		return err
	}
	dir := filepath.Join(r.dir, ChannelsDir, md.ID)
	if err := writeFileAtomic(filepath.Join(dir, MetadataFile), data); err != nil {
		return err
	}
	r.loadChannel(md.ID, r.notify)
	return nil
}

// RemoveChannel removes the channel folder of the channel with the given
// ID, folder name or name (ErrNotFound if none).
func (r *Root) RemoveChannel(idOrName string) error {
	r.mu.RLock()
	c := r.channelLocked(idOrName)
	closed := r.closed
	var dir string
	if c != nil {
		dir = c.dir
	} else if cc, ok := r.channels[idOrName]; ok {
		dir = cc.dir // a folder whose metadata never parsed
	}
	r.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if dir == "" {
		return fmt.Errorf("registry: remove channel %q: %w", idOrName, ErrNotFound)
	}
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	if err := os.RemoveAll(filepath.Join(r.dir, ChannelsDir, dir)); err != nil {
		return fmt.Errorf("registry: remove channel %q: %w", idOrName, err)
	}
	r.forget(ChannelsDir+"/"+dir, r.notify)
	return nil
}

// writeFileAtomic writes data to a temporary file next to name and renames
// it into place, creating the folder if needed.
func writeFileAtomic(name string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	for _, e := range []error{werr, serr, cerr} {
		if e != nil {
			os.Remove(tmp)
			return e
		}
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
