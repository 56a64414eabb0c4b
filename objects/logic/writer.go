package logic

import (
	"bytes"
	"context"
	"fmt"

	"github.com/liveobjects/liveobjects/transport"
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
//
// # Limits
//
// No event is larger than the Writer's limit: the driver's largest event
// (see NewWriter), and at most Config.MaxValue. A Stream line over the
// limit is refused as a whole: nothing of it is published, the Write that
// takes it past the limit fails with an error that wraps
// transport.ErrTooLarge, and the bytes that follow, up to the line's
// newline, are dropped (Writes that bring only more of that line fail
// too); the lines after it are published as usual. A Variable's or Text's
// value over the limit is refused the same way: every Write until Flush,
// Close or Truncate fails, and nothing is published.
//
// A caller may hand on one write of its user in parts (FUSE does, at 128
// KiB). When a part after the first is refused, the user is told that
// only the earlier parts were taken, and writes the rest again; the
// Writer recognises that repetition of the refused bytes (a write at
// least as long that starts with them) and refuses it too, so that the
// error reaches the user.
type Writer struct {
	kind    Kind
	max     int
	pub     Publisher
	pending []byte
	dirty   bool // Variable, Text: something was written since the last commit

	discard    bool   // Stream: inside a refused line; drop bytes up to its newline
	refused    []byte // the start of the bytes the last Write refused (nil: none)
	refusedLen int    // how many bytes the last Write refused (with refused)
	tooBig     bool   // Variable, Text: the value being written was refused
}

// refusedKeep is how many bytes of a refused write the Writer keeps to
// recognise their repetition.
const refusedKeep = 4096

// NewWriter returns a Writer that publishes through pub. maxEvent is the
// largest event the channel's driver accepts (0 or less: no limit but
// Config.MaxValue).
func (o *Object) NewWriter(pub Publisher, maxEvent int) *Writer {
	max := o.cfg.MaxValue
	if maxEvent > 0 && maxEvent < max {
		max = maxEvent
	}
	return &Writer{kind: o.cfg.Kind, max: max, pub: pub}
}

// Max returns the largest event the Writer publishes.
func (w *Writer) Max() int { return w.max }

func (w *Writer) errLine() error {
	return fmt.Errorf("logic: line longer than %d bytes, the largest event this channel takes; nothing of it was published (split it into shorter lines): %w", w.max, transport.ErrTooLarge)
}

func (w *Writer) errValue() error {
	return fmt.Errorf("logic: value larger than %d bytes, the largest event this channel takes; it was not published (write a smaller value): %w", w.max, transport.ErrTooLarge)
}

// Write takes bytes and returns how many it took. For a Stream it
// publishes every complete line before returning; if that fails, no line
// of p was published out of order, n is 0 and the error says so (lines
// published before the failure stay published), and the pending partial
// line is left as it was before the Write: writing the same bytes again
// makes the same lines. When p holds whole lines and then the start of a
// line over the limit, Write publishes the whole lines and returns their
// length with an error that wraps transport.ErrTooLarge; the line over the
// limit is dropped with the start of it that was pending. Otherwise n is
// 0 or len(p).
func (w *Writer) Write(ctx context.Context, p []byte) (int, error) {
	if w.kind != Stream {
		return w.writeValue(p)
	}
	if r := w.refused; r != nil {
		w.refused = nil
		if len(p) >= w.refusedLen && bytes.Equal(p[:len(r)], r) {
			// The refused bytes again: refuse them again, so that the
			// error reaches the user. A repetition is never shorter
			// than the refused bytes (the user writes the rest of its
			// buffer again), so a shorter write that merely starts the
			// same way is new. The user is told none of p was taken;
			// what follows the refused line's newline in p is dropped
			// with it.
			if w.discard && bytes.IndexByte(p, '\n') >= 0 {
				w.discard = false
			}
			return 0, w.errLine()
		}
	}
	taken := 0
	if w.discard {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return 0, w.errLine() // more of the refused line
		}
		w.discard = false
		taken = i + 1
	}
	q := p[taken:]
	over, start := false, 0
	if len(w.pending)+len(q) > w.max {
		// Some line may be over the limit (else none can be: the usual
		// write skips the search).
		over, start = w.longLine(q)
	}
	if !over {
		if err := w.appendLines(ctx, q); err != nil {
			return 0, w.untake(taken, err)
		}
		return len(p), nil
	}
	if start > 0 {
		// Whole lines before the long one.
		if err := w.appendLines(ctx, q[:start]); err != nil {
			return 0, w.untake(taken, err)
		}
	}
	long := q[start:]
	w.pending = nil
	w.discard = bytes.IndexByte(long, '\n') < 0
	w.refused = append([]byte(nil), long[:min(len(long), refusedKeep)]...)
	w.refusedLen = len(long)
	return taken + start, w.errLine()
}

// longLine finds the first line that q (after the pending line) takes
// past the limit, and start, where it begins in q (0 also when it
// continues the pending line).
func (w *Writer) longLine(q []byte) (over bool, start int) {
	size := len(w.pending)
	for i := 0; ; {
		j := bytes.IndexByte(q[i:], '\n')
		seg := len(q) - i
		if j >= 0 {
			seg = j
		}
		if size+seg > w.max {
			return true, start
		}
		if j < 0 {
			return false, 0
		}
		i += j + 1
		start, size = i, 0
	}
}

// untake undoes the end of a refused line when a Write that ended it
// failed (taken > 0): the user is told that nothing was taken, so the end
// of the line comes again and is dropped again. The pending line was
// empty inside the refused line, and the failed appendLines left it so.
func (w *Writer) untake(taken int, err error) error {
	if taken > 0 {
		w.discard = true
	}
	return err
}

// appendLines adds q to the pending line and publishes every complete
// line. On failure the pending line is left as it was before: the failed
// lines are not retried behind the caller's back (the error reports
// them, and the caller, told that none of its bytes were taken, may
// write them again), and a retry does not find q's partial line pending
// already.
func (w *Writer) appendLines(ctx context.Context, q []byte) error {
	last := bytes.LastIndexByte(q, '\n')
	if last < 0 {
		w.pending = append(w.pending, q...)
		return nil
	}
	// One copy of all the complete lines; the events are slices of it
	// (the driver owns them from here on and nobody writes to them).
	buf := make([]byte, 0, len(w.pending)+last)
	buf = append(append(buf, w.pending...), q[:last]...)
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
	if err := w.pub.PublishBatch(ctx, events); err != nil {
		return err
	}
	w.pending = append([]byte(nil), q[last+1:]...)
	return nil
}

// writeValue takes bytes of a Variable's or Text's value.
func (w *Writer) writeValue(p []byte) (int, error) {
	if w.tooBig {
		return 0, w.errValue()
	}
	size := len(w.pending) + len(p)
	if w.kind == Variable {
		// Trailing newlines are not part of a variable's value.
		size -= trailingNewlines(p)
		if size == len(w.pending) {
			size -= trailingNewlines(w.pending)
		}
	}
	if size > w.max {
		w.pending, w.dirty, w.tooBig = nil, false, true
		return 0, w.errValue()
	}
	w.pending = append(w.pending, p...)
	w.dirty = true
	return len(p), nil
}

func trailingNewlines(b []byte) int {
	return len(b) - len(bytes.TrimRight(b, "\n"))
}

// Truncate drops anything written and not yet published (a file opened
// with O_TRUNC, or truncated to zero), and forgets a refused line or
// value.
func (w *Writer) Truncate() {
	w.pending = nil
	w.dirty = false
	w.discard, w.refused, w.tooBig = false, nil, false
}

// Flush publishes a Variable's or Text's pending value (if anything was
// written since the last Flush). For a Stream it does nothing: a partial
// line waits for Close. A value that was refused for its size is reported
// once more (and forgotten: what is written next is a new value).
func (w *Writer) Flush(ctx context.Context) error {
	if w.kind == Stream {
		return nil
	}
	if w.tooBig {
		w.tooBig = false
		return w.errValue()
	}
	if !w.dirty {
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
	return w.EndLine(ctx)
}

// Partial reports whether a Stream has a trailing partial line waiting.
func (w *Writer) Partial() bool { return w.kind == Stream && len(w.pending) > 0 }

// EndLine publishes a Stream's trailing partial line as if it ended there
// (bytes written after it start a new line), and forgets a refused line.
// It does nothing for a Variable or a Text.
func (w *Writer) EndLine(ctx context.Context) error {
	if w.kind != Stream {
		return nil
	}
	w.discard, w.refused = false, nil
	if len(w.pending) == 0 {
		return nil
	}
	ev := w.pending
	w.pending = nil
	return w.pub.PublishBatch(ctx, [][]byte{ev})
}
