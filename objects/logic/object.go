package logic

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// Kind names the logic of an object.
type Kind int

// The kinds this package implements.
const (
	// Stream is a sequence of events (lines), with an optional bounded
	// history that joiners receive.
	Stream Kind = iota + 1
	// Variable is a replicated value; the last write in the order wins.
	Variable
	// Text is a shared text note; each update replaces the text.
	Text
)

// String returns the kind's name as used in files and messages.
func (k Kind) String() string {
	switch k {
	case Stream:
		return "stream"
	case Variable:
		return "variable"
	case Text:
		return "text"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// ParseKind maps a category name to a Kind.
func ParseKind(s string) (Kind, error) {
	switch s {
	case "stream", "channel":
		return Stream, nil
	case "variable":
		return Variable, nil
	case "text":
		return Text, nil
	}
	return 0, fmt.Errorf("logic: no object logic for category %q (this build implements stream, variable and text)", s)
}

// Errors returned by readers and writers.
var (
	// ErrOverrun ends a stream reader that fell further behind than its
	// bound allows; the events it missed are not hidden from it.
	ErrOverrun = errors.New("logic: reader fell behind the stream and was ended; reopen to continue from the current state")
	// ErrClosed is returned by Read after the object was closed and the
	// reader has consumed everything queued before that.
	ErrClosed = errors.New("logic: object closed")
)

// DefaultReaderLimit bounds the bytes queued for one reader.
const DefaultReaderLimit = 64 << 20

// Config sets up an Object.
type Config struct {
	// Kind selects the logic.
	Kind Kind
	// History is how many recent events a Stream keeps and gives to
	// joiners and new readers (0: none; a pure stream).
	History int
	// ReaderLimit bounds the bytes queued for one reader (0: DefaultReaderLimit).
	ReaderLimit int
	// MaxValue bounds a variable's or text's value and a stream's line
	// (0: 16 MiB); a Writer also keeps to its driver's limit (NewWriter).
	MaxValue int
}

// entry is one retained stream event.
type entry struct {
	seq  uint64
	data []byte
}

// Object is the local replica of one live object. It implements
// transport.Handler.
type Object struct {
	cfg Config

	mu      sync.Mutex // protects everything below
	seq     uint64     // last applied sequence number
	history []entry    // Stream: retained events, oldest first
	value   []byte     // Variable, Text: current value
	hasVal  bool       // Variable, Text: a value was ever set
	readers map[*Reader]struct{}
	ended   error         // nil while open; what readers get once ended (ErrClosed, or Fail's error)
	applied chan struct{} // closed when seq moves or the object ends, if WaitApplied waits
	mtime   time.Time     // time of the last applied event or restore
	events  uint64        // events applied since creation
}

var _ transport.Handler = (*Object)(nil)

// New returns an empty Object.
func New(cfg Config) *Object {
	if cfg.ReaderLimit <= 0 {
		cfg.ReaderLimit = DefaultReaderLimit
	}
	if cfg.MaxValue <= 0 {
		cfg.MaxValue = 16 << 20
	}
	return &Object{cfg: cfg, readers: map[*Reader]struct{}{}, mtime: time.Now()}
}

// Kind returns the object's kind.
func (o *Object) Kind() Kind { return o.cfg.Kind }

var _ transport.BatchHandler = (*Object)(nil)

// Deliver applies one event and passes it to every reader.
func (o *Object) Deliver(ev transport.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ended != nil {
		return
	}
	o.mtime = time.Now()
	o.applyLocked(ev)
	o.wakeLocked()
}

// DeliverBatch applies a run of events and passes each to every reader,
// under one lock and with one reading of the clock.
func (o *Object) DeliverBatch(evs []transport.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ended != nil || len(evs) == 0 {
		return
	}
	o.mtime = time.Now()
	for _, ev := range evs {
		o.applyLocked(ev)
	}
	o.wakeLocked()
}

// wakeLocked wakes the callers of WaitApplied (o.mu held).
func (o *Object) wakeLocked() {
	if o.applied != nil {
		close(o.applied)
		o.applied = nil
	}
}

// WaitApplied returns once the object has applied the event of sequence
// number seq (or a state after it), has ended, or ctx has ended. It tells
// a writer that its own event is in this replica.
func (o *Object) WaitApplied(ctx context.Context, seq uint64) {
	for {
		o.mu.Lock()
		if o.seq >= seq || o.ended != nil {
			o.mu.Unlock()
			return
		}
		if o.applied == nil {
			o.applied = make(chan struct{})
		}
		ch := o.applied
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// applyLocked applies one event; o.mu is held.
func (o *Object) applyLocked(ev transport.Event) {
	o.seq = ev.Seq
	o.events++
	switch o.cfg.Kind {
	case Stream:
		if o.cfg.History > 0 {
			o.history = append(o.history, entry{ev.Seq, ev.Data})
			if len(o.history) > o.cfg.History {
				// Drop the oldest, copying down now and then so the
				// backing array does not grow without bound.
				o.history = o.history[len(o.history)-o.cfg.History:]
				if cap(o.history) > 4*o.cfg.History+16 {
					o.history = append([]entry(nil), o.history...)
				}
			}
		}
	default:
		o.value = ev.Data
		o.hasVal = true
	}
	for r := range o.readers {
		r.pushEvent(ev.Data, o)
	}
}

// render formats one event or value for readers.
func (o *Object) render(data []byte) []byte {
	if len(data) > 0 && data[len(data)-1] == '\n' {
		return data
	}
	out := make([]byte, len(data)+1)
	copy(out, data)
	out[len(data)] = '\n'
	return out
}

// snapshotLocked returns what a new reader sees first; nil when nothing.
func (o *Object) snapshotLocked() []byte {
	switch o.cfg.Kind {
	case Stream:
		var n int
		for _, e := range o.history {
			n += len(e.data) + 1
		}
		if n == 0 {
			return nil
		}
		out := make([]byte, 0, n)
		for _, e := range o.history {
			out = append(out, o.render(e.data)...)
		}
		return out
	default:
		if !o.hasVal {
			return nil
		}
		return o.render(o.value)
	}
}

// Snapshot returns the current state as a reader would first see it.
func (o *Object) Snapshot() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.snapshotLocked()
}

// Seq returns the sequence number of the last applied event.
func (o *Object) Seq() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seq
}

// ModTime returns when the object last changed.
func (o *Object) ModTime() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mtime
}

// Checkpoint encodes the state after every delivered event.
func (o *Object) Checkpoint() ([]byte, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch o.cfg.Kind {
	case Stream:
		if o.cfg.History == 0 {
			return nil, nil
		}
		return encodeList(o.history), nil
	default:
		if !o.hasVal {
			return nil, nil
		}
		return encodeValue(o.value), nil
	}
}

// Restore replaces the state with a checkpoint taken after event seq.
// On a catch-up (the object had applied events before and fell behind),
// open readers are not left with a silent gap: a stream replays to them
// the retained events they missed, or, when the history does not reach
// back far enough, ends them with ErrOverrun; a variable or text shows
// them its new value.
func (o *Object) Restore(cp []byte, seq uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch o.cfg.Kind {
	case Stream:
		var hist []entry
		if len(cp) > 0 {
			var err error
			hist, err = decodeList(cp)
			if err != nil {
				return fmt.Errorf("logic: restore stream at %d: %w", seq, err)
			}
		}
		if o.cfg.History > 0 && len(hist) > o.cfg.History {
			hist = hist[len(hist)-o.cfg.History:]
		}
		if o.cfg.History == 0 {
			hist = nil
		}
		if len(o.readers) > 0 && seq > o.seq {
			o.replayLocked(hist, seq)
		}
		o.history = hist
	default:
		if len(cp) == 0 {
			o.value, o.hasVal = nil, false
		} else {
			v, err := decodeValue(cp)
			if err != nil {
				return fmt.Errorf("logic: restore %s at %d: %w", o.cfg.Kind, seq, err)
			}
			changed := !o.hasVal || string(v) != string(o.value)
			o.value, o.hasVal = v, true
			if changed && o.seq != 0 {
				// Readers that were open saw an older value; show them
				// the one the object holds now.
				for r := range o.readers {
					r.pushEvent(v, o)
				}
			}
		}
	}
	o.seq = seq
	o.mtime = time.Now()
	o.wakeLocked()
	return nil
}

// replayLocked gives open readers the events between o.seq and seq from
// hist, or ends them when hist does not cover the gap.
func (o *Object) replayLocked(hist []entry, seq uint64) {
	var missed []entry
	next := o.seq + 1
	for _, e := range hist {
		if e.seq < next {
			continue
		}
		if e.seq != next {
			break // a hole: the history does not cover the gap
		}
		missed = append(missed, e)
		next++
	}
	for r := range o.readers {
		if next <= seq {
			r.end(ErrOverrun)
			delete(o.readers, r)
			continue
		}
		for _, e := range missed {
			r.pushEvent(e.data, o)
		}
	}
}

// Close ends the object: readers get end of file after what is queued.
func (o *Object) Close() { o.Fail(ErrClosed) }

// Fail ends the object as Close does, except that its readers get err
// after what is queued instead of ErrClosed: the channel under it ended
// without the object being closed (its driver lost its link). Once the
// object has ended, Fail and Close do nothing. A nil err is ErrClosed.
func (o *Object) Fail(err error) {
	if err == nil {
		err = ErrClosed
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ended != nil {
		return
	}
	o.ended = err
	for r := range o.readers {
		r.end(err)
	}
	o.wakeLocked()
}

// NewReader registers a reader that first sees the current snapshot, then
// every later event. Call Reader.Close when done.
func (o *Object) NewReader() *Reader {
	r := &Reader{obj: o, wake: make(chan struct{}, 1)}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.cfg.Kind == Stream:
		for _, e := range o.history {
			r.pushEvent(e.data, o)
		}
	case o.hasVal:
		r.pushEvent(o.value, o)
	}
	if o.ended != nil {
		r.err = o.ended
	} else {
		o.readers[r] = struct{}{}
	}
	return r
}

// Readers returns the number of open readers.
func (o *Object) Readers() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.readers)
}

// Reader is one reader's view of an Object: the snapshot, then events.
type Reader struct {
	obj  *Object
	wake chan struct{} // has a token when the queue or err changed

	// Protected by obj.mu: the queued bytes are buf[head:]; ends holds
	// the offsets in buf where queued events end, ascending, so that a
	// read can return whole events. Events are copied into buf once.
	buf  []byte
	head int
	ends []int
	err  error
}

func (r *Reader) queued() int { return len(r.buf) - r.head }

// pushEvent queues one event as readers see it (a newline added when it
// does not end in one); called with obj.mu held.
func (r *Reader) pushEvent(data []byte, o *Object) {
	if r.err != nil {
		return
	}
	n := len(data)
	nl := n == 0 || data[n-1] != '\n'
	if nl {
		n++
	}
	if r.queued()+n > o.cfg.ReaderLimit {
		if o.cfg.Kind == Stream {
			r.err = ErrOverrun
			delete(o.readers, r)
			r.signal()
			return
		}
		// A value is whole: the newest one replaces what is queued.
		r.buf, r.head, r.ends = r.buf[:0], 0, r.ends[:0]
	}
	if r.head > 0 && r.head >= len(r.buf)/2 {
		// Move the unread part down instead of growing forever.
		k := copy(r.buf, r.buf[r.head:])
		r.buf = r.buf[:k]
		for i := range r.ends {
			r.ends[i] -= r.head
		}
		r.head = 0
	}
	r.buf = append(r.buf, data...)
	if nl {
		r.buf = append(r.buf, '\n')
	}
	r.ends = append(r.ends, len(r.buf))
	r.signal()
}

func (r *Reader) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// end stops the reader after what is queued; called with obj.mu held.
func (r *Reader) end(err error) {
	if r.err == nil {
		r.err = err
	}
	r.signal()
}

// Ready reports whether a Read would return without blocking.
func (r *Reader) Ready() bool {
	r.obj.mu.Lock()
	defer r.obj.mu.Unlock()
	return r.queued() > 0 || r.err != nil
}

// Read fills p with queued bytes, whole events first: it returns as many
// whole events as fit, or part of one event when the first does not fit.
// It blocks until there is data, the reader ends (ErrClosed, ErrOverrun)
// or ctx ends (ctx.Err()).
func (r *Reader) Read(ctx context.Context, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		r.obj.mu.Lock()
		if q := r.queued(); q > 0 {
			n := q
			if n > len(p) {
				// The last event end that fits; else part of the first.
				i := sort.SearchInts(r.ends, r.head+len(p)+1) - 1
				if i >= 0 && r.ends[i] > r.head {
					n = r.ends[i] - r.head
				} else {
					n = len(p)
				}
			}
			copy(p, r.buf[r.head:r.head+n])
			r.head += n
			k := 0
			for k < len(r.ends) && r.ends[k] <= r.head {
				k++
			}
			r.ends = r.ends[k:]
			if r.head == len(r.buf) {
				r.buf, r.head = r.buf[:0], 0
				r.ends = r.ends[:0]
			}
			r.obj.mu.Unlock()
			return n, nil
		}
		if r.err != nil {
			err := r.err
			r.obj.mu.Unlock()
			return 0, err
		}
		r.obj.mu.Unlock()
		select {
		case <-r.wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Close unregisters the reader. A blocked Read returns ErrClosed.
func (r *Reader) Close() {
	r.obj.mu.Lock()
	defer r.obj.mu.Unlock()
	delete(r.obj.readers, r)
	r.end(ErrClosed)
}
