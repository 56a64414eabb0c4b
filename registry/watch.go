package registry

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// ErrWatching is returned by Watch while an earlier watcher still runs.
var ErrWatching = errors.New("registry: already watching")

// Debounce timings of the watcher: a batch of events is processed once
// the root has been quiet for quietPeriod, or maxDelay after its first
// event, whichever comes first.
const (
	quietPeriod = 50 * time.Millisecond
	maxDelay    = 250 * time.Millisecond
)

// Watch starts watching the root with fsnotify: every folder below it,
// including folders created later, is watched. Additions, edits, renames
// and removals of definitions and channel metadata take effect (and are
// sent to subscribers) within a second; an edit that breaks a file is
// reported (ProblemFound, Entry.Err, Problems) while the last good
// definition stays in force. Watch returns once watching has started; the
// watcher stops when ctx is done or the Root is closed. Once a watcher
// stopped by its ctx has ended, Watch may be called again; until then it
// returns ErrWatching. Watch rescans the root once started, so changes
// made between Open and Watch are seen.
func (r *Root) Watch(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if r.watching {
		r.mu.Unlock()
		return ErrWatching
	}
	r.watching = true
	r.mu.Unlock()

	w, err := fsnotify.NewWatcher()
	if err != nil {
		r.mu.Lock()
		r.watching = false
		r.mu.Unlock()
		return fmt.Errorf("registry: watch %s: %w", r.dir, err)
	}
	if err := r.addTree(w, r.dir); err != nil {
		w.Close()
		r.mu.Lock()
		r.watching = false
		r.mu.Unlock()
		return fmt.Errorf("registry: watch %s: %w", r.dir, err)
	}
	r.loadMu.Lock()
	r.scan("", r.notify)
	r.loadMu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.watchLoop(ctx, w)
		w.Close()
		// The watcher has stopped: Watch may start another.
		r.mu.Lock()
		r.watching = false
		r.mu.Unlock()
	}()
	return nil
}

// addTree watches dir and every folder below it. Errors below the top are
// logged, not returned (a folder may vanish while it is walked).
func (r *Root) addTree(w *fsnotify.Watcher, dir string) error {
	if err := w.Add(dir); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == dir {
			return nil
		}
		if err := w.Add(p); err != nil {
			r.log.Warn("registry: cannot watch folder", "dir", p, "err", err)
		}
		return nil
	})
}

// watchLoop collects events into batches and applies them.
func (r *Root) watchLoop(ctx context.Context, w *fsnotify.Watcher) {
	pending := map[string]bool{}
	var timer *time.Timer
	var timerC <-chan time.Time
	var first time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.stop:
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if len(pending) == 0 {
				first = time.Now()
			}
			pending[ev.Name] = true
			wait := quietPeriod
			if left := maxDelay - time.Since(first); left < wait {
				wait = max(left, 0)
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Stop()
				timer.Reset(wait)
			}
			timerC = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// An overflowed event queue loses events: rescan everything.
			r.log.Warn("registry: watcher error; rescanning", "err", err)
			r.loadMu.Lock()
			_ = r.addTree(w, r.dir)
			r.scan("", r.notify)
			r.loadMu.Unlock()
		case <-timerC:
			timerC = nil
			paths := make([]string, 0, len(pending))
			for p := range pending {
				paths = append(paths, p)
			}
			clear(pending)
			sort.Strings(paths)
			// Paths that are gone first: their stale watches must be
			// removed before folders moved elsewhere are watched again.
			var gone, present []string
			for _, p := range paths {
				if _, err := os.Lstat(p); err != nil {
					gone = append(gone, p)
				} else {
					present = append(present, p)
				}
			}
			r.loadMu.Lock()
			for _, p := range gone {
				r.unwatch(w, p)
				r.apply(w, p)
			}
			for _, p := range present {
				r.apply(w, p)
			}
			r.loadMu.Unlock()
		}
	}
}

// unwatch removes the watches of a folder that is gone and of every
// folder below it. A folder renamed within the root keeps its inotify
// watches, which fsnotify would go on reporting under the old names; once
// removed, the folder is watched again under its new name by apply.
func (r *Root) unwatch(w *fsnotify.Watcher, abs string) {
	prefix := abs + string(filepath.Separator)
	for _, p := range w.WatchList() {
		if p == abs || strings.HasPrefix(p, prefix) {
			_ = w.Remove(p) // may already be gone with its folder
		}
	}
}

// apply brings the state in line with the file or folder at abs.
// loadMu is held.
func (r *Root) apply(w *fsnotify.Watcher, abs string) {
	rel, ok := r.Rel(abs)
	if !ok || rel == "" {
		return
	}
	st, err := os.Stat(abs)
	switch {
	case err != nil:
		// Gone (removed or renamed away): forget it and everything below.
		r.forget(rel, r.notify)
		if d, ok := channelDir(rel); ok {
			r.loadChannel(d, r.notify) // the folder may remain without metadata
		}
	case st.IsDir():
		_ = r.addTree(w, abs)
		r.scan(rel, r.notify)
	case isDefinition(rel):
		r.loadObject(rel, r.notify)
	default:
		if d, ok := channelDir(rel); ok {
			r.loadChannel(d, r.notify)
		}
	}
}
