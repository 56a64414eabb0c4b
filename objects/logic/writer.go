package logic

import (
	"bytes"
	"context"
	"fmt"
)

// Publisher sends events into a channel's order. PublishBatch returns once
// every event is in the order (transport.Member and BatchPublisher adapt to
// it; see channels).
type Publisher interface {
	PublishBatch(ctx context.Context, events [][]byte) error
}

// Writer turns bytes written by a user into events. For a Stream each
// complete line is one event (the newline is not part of it) and a
// trailing partial line waits for more bytes or for Close; for a Variable
// or a Text everything written until Close is one update that replaces the
// value. A Writer is used by one goroutine at a time.
type Writer struct {
	kind    Kind
	max     int
	pub     Publisher
	pending []byte
	dirty   bool // Variable, Text: something was written since the last commit
}

// NewWriter returns a Writer that publishes through pub.
func (o *Object) NewWriter(pub Publisher) *Writer {
	return &Writer{kind: o.cfg.Kind, max: o.cfg.MaxValue, pub: pub}
}

// Write takes bytes. For a Stream it publishes every complete line before
// returning; if that fails, no line of p was published out of order and
// the error says so (lines published before the failure stay published).
func (w *Writer) Write(ctx context.Context, p []byte) (int, error) {
	if w.kind != Stream {
		if len(w.pending)+len(p) > w.max {
			return 0, fmt.Errorf("logic: value larger than %d bytes", w.max)
		}
		w.pending = append(w.pending, p...)
		w.dirty = true
		return len(p), nil
	}
	if len(w.pending)+len(p) > w.max && bytes.IndexByte(p, '\n') < 0 {
		return 0, fmt.Errorf("logic: line longer than %d bytes", w.max)
	}
	w.pending = append(w.pending, p...)
	last := bytes.LastIndexByte(w.pending, '\n')
	if last < 0 {
		return len(p), nil
	}
	// One copy of all the complete lines; the events are slices of it
	// (the driver owns them from here on and nobody writes to them).
	buf := append([]byte(nil), w.pending[:last]...)
	events := make([][]byte, 0, bytes.Count(buf, []byte{'\n'})+1)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			events = append(events, buf)
			break
		}
		events = append(events, buf[:i:i])
		buf = buf[i+1:]
	}
	rest := append([]byte(nil), w.pending[last+1:]...)
	if err := w.pub.PublishBatch(ctx, events); err != nil {
		// Keep the partial line; the failed lines are not retried
		// behind the caller's back: the write reports the failure.
		w.pending = rest
		return 0, err
	}
	w.pending = rest
	return len(p), nil
}

// Truncate drops anything written and not yet published (a file opened
// with O_TRUNC, or truncated to zero).
func (w *Writer) Truncate() {
	w.pending = nil
	w.dirty = false
}

// Flush publishes a Variable's or Text's pending value (if anything was
// written since the last Flush). For a Stream it does nothing: a partial
// line waits for Close.
func (w *Writer) Flush(ctx context.Context) error {
	if w.kind == Stream || !w.dirty {
		return nil
	}
	v := w.pending
	if w.kind == Variable {
		v = bytes.TrimRight(v, "\n")
	}
	if err := w.pub.PublishBatch(ctx, [][]byte{append([]byte(nil), v...)}); err != nil {
		return err
	}
	w.pending, w.dirty = nil, false
	return nil
}

// Close publishes what is left: a Stream's trailing partial line, or a
// Variable's or Text's pending value.
func (w *Writer) Close(ctx context.Context) error {
	if w.kind != Stream {
		return w.Flush(ctx)
	}
	if len(w.pending) == 0 {
		return nil
	}
	ev := w.pending
	w.pending = nil
	return w.pub.PublishBatch(ctx, [][]byte{ev})
}
