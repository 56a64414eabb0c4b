package fs

import (
	"context"
	"errors"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/objects/logic"
)

// handle is one open file description.
type handle struct {
	m   *Mount
	rel string

	static []byte // content of a non-live file

	live *channels.Live // nil for static files
	r    *logic.Reader  // nil unless opened for reading
	mu   sync.Mutex     // serialises use of w, and release
	w    *logic.Writer  // nil unless opened for writing
	done bool           // released
	// closed is set by a Flush that leaves a stream's partial line
	// waiting (see Mount.settle), and cleared by a Write; with mu.
	closed bool
}

var (
	_ gofs.FileReader   = (*handle)(nil)
	_ gofs.FileWriter   = (*handle)(nil)
	_ gofs.FileFlusher  = (*handle)(nil)
	_ gofs.FileReleaser = (*handle)(nil)
	_ gofs.FileFsyncer  = (*handle)(nil)
)

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if h.live == nil {
		if off >= int64(len(h.static)) {
			return fuse.ReadResultData(nil), 0
		}
		return fuse.ReadResultData(h.static[off:min(int64(len(h.static)), off+int64(len(dest)))]), 0
	}
	if h.r == nil {
		return nil, syscall.EBADF
	}
	n, err := h.r.Read(ctx, dest)
	switch {
	case err == nil:
		return fuse.ReadResultData(dest[:n]), 0
	case errors.Is(err, logic.ErrClosed):
		return fuse.ReadResultData(nil), 0 // end of file
	case ctx.Err() != nil:
		return nil, syscall.EINTR
	}
	// The reader ended with an error (it fell behind, or the object's
	// membership ended): the error attribute says why.
	h.m.setError(h.rel, err)
	return nil, errno("read", h.rel, err)
}

// publishCtx bounds a publish by the mount's timeout, not by the request:
// see the package doc on interrupts.
func (h *handle) publishCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), h.m.cfg.PublishTimeout)
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.w == nil {
		return 0, syscall.EBADF
	}
	h.m.settle(h)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		// Written to again through the same open file (a process that
		// shares it): the line goes on.
		h.closed = false
		h.m.dropClosed(h)
	}
	pctx, cancel := h.publishCtx()
	defer cancel()
	n, err := h.w.Write(pctx, data)
	if err != nil && n == 0 {
		return 0, h.publishFailed("write", err)
	}
	// n < len(data) with an error: whole lines were taken, then a line
	// over the limit was refused. The kernel reports a short write; the
	// process writes the rest again and that write fails with the error.
	return uint32(n), 0
}

// Flush publishes a variable's or text's value at close(2), so that its
// failure reaches the closing process. A stream's partial line waits for
// Release, since another process may still write the rest of the line
// through the same open file (a shell's child inheriting it), or for a
// write to the object through another open file, whichever comes first:
// Release comes after close(2) has returned, and what a process wrote
// before it closed the file comes before what is written after.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	if h.w == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.w.Partial() && !h.closed {
		h.closed = true
		h.m.addClosed(h)
	}
	pctx, cancel := h.publishCtx()
	defer cancel()
	return h.publishFailed("flush", h.w.Flush(pctx))
}

// publishFailed notes a failed publish in the error attribute and returns
// its errno (see publishErrno).
func (h *handle) publishFailed(op string, err error) syscall.Errno {
	if err != nil {
		h.m.setError(h.rel, err)
	}
	return publishErrno(op, h.rel, err)
}

// endLine publishes the partial line of a closed handle, unless it was
// written to again or released since it was closed (Release publishes it
// itself), and then takes the handle out of the mount's closed lines.
func (h *handle) endLine() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed || h.done {
		return
	}
	h.closed = false
	pctx, cancel := h.publishCtx()
	defer cancel()
	if err := h.w.EndLine(pctx); err != nil {
		errno("publish at close", h.rel, err)
	}
	h.m.dropClosed(h)
}

// Fsync has nothing to do: every write returned once its events were in
// the channel's order.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno { return 0 }

func (h *handle) Release(ctx context.Context) syscall.Errno {
	// The partial line goes out before the handle leaves the mount's
	// lists: a write through another handle meanwhile waits for it
	// (Mount.settle).
	h.closeAll()
	h.m.removeHandle(h)
	return 0
}

// endRead ends the handle's reader: a blocked or later read sees end of
// file.
func (h *handle) endRead() {
	if h.r != nil {
		h.r.Close()
	}
}

// closeAll publishes what a writer has left, ends the reader and drops the
// live object.
func (h *handle) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return
	}
	h.done = true
	if h.w != nil {
		pctx, cancel := h.publishCtx()
		if err := h.w.Close(pctx); err != nil {
			errno("publish at close", h.rel, err)
		}
		cancel()
	}
	h.endRead()
	if h.live != nil {
		h.live.Release()
	}
}

// publishErrno maps a failed publish: EFBIG for an event over the
// driver's limit, EIO for everything else (the events were not all put in
// the order; none was half sent).
func publishErrno(op, rel string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e := errno(op, rel, err); e == syscall.EFBIG {
		return e
	}
	return syscall.EIO
}
