package registry

// ChangeKind says what happened to a file.
type ChangeKind int

// Kinds of change.
const (
	// Added: a new definition or channel is in force.
	Added ChangeKind = iota + 1
	// Changed: a definition or channel was edited; the new one is in force.
	Changed
	// Removed: the file (or its folder) is gone.
	Removed
	// ProblemFound: the file was edited and now has a problem; the last
	// good definition (if any) stays in force. See Entry.Err / Problems.
	ProblemFound
	// Resync: changes were dropped because the subscriber fell behind;
	// re-read Objects and Channels.
	Resync
)

// String names the kind.
func (k ChangeKind) String() string {
	switch k {
	case Added:
		return "added"
	case Changed:
		return "changed"
	case Removed:
		return "removed"
	case ProblemFound:
		return "problem"
	case Resync:
		return "resync"
	}
	return "unknown"
}

// Change is one change notification.
type Change struct {
	Kind ChangeKind
	// Path is relative to the root with "/" separators: a .liveobject
	// file, or channels/<dir>/metadata.xml for a channel.
	Path string
	// Channel is the channel folder name for changes to channels/.
	Channel string
}

// subBuffer is the capacity of each subscription's channel.
const subBuffer = 256

// Subscribe returns a channel of changes and a function that ends the
// subscription (idempotent; it closes the channel). The channel is
// buffered and never blocks the watcher: when it is full the oldest
// pending change is dropped and a Resync change is queued, so a reader
// that falls behind learns that it must re-read the state. The channel is
// closed by the returned function or by Close.
func (r *Root) Subscribe() (<-chan Change, func()) {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	ch := make(chan Change, subBuffer)
	r.mu.RLock()
	closed := r.closed
	r.mu.RUnlock()
	if closed {
		close(ch)
		return ch, func() {}
	}
	id := r.nextID
	r.nextID++
	r.subs[id] = ch
	return ch, func() {
		r.subMu.Lock()
		defer r.subMu.Unlock()
		if c, ok := r.subs[id]; ok {
			close(c)
			delete(r.subs, id)
		}
	}
}

// notify sends c to every subscriber without blocking.
func (r *Root) notify(c Change) {
	r.log.Debug("registry: change", "kind", c.Kind.String(), "path", c.Path)
	r.subMu.Lock()
	defer r.subMu.Unlock()
	for _, ch := range r.subs {
		select {
		case ch <- c:
			continue
		default:
		}
		// Full: drop the two oldest, queue a Resync, then the change.
		for i := 0; i < 2; i++ {
			select {
			case <-ch:
			default:
			}
		}
		select {
		case ch <- Change{Kind: Resync}:
		default:
		}
		select {
		case ch <- c:
		default:
		}
	}
}
