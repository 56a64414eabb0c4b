package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/liveobjects/liveobjects/fs"
	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/objects/micro"
	"github.com/liveobjects/liveobjects/services"
)

// hostedFiles is files/ in a mount whose daemon hosts the root's services:
// the distributed files of the root's micro-object server while that
// service runs. A goroutine follows the services host: when the service
// starts (liveobjects service on ROOT mo) it connects, when it stops it
// lets go, and files/ appears and goes with it.
type hostedFiles struct {
	socket string
	host   *services.Host

	mu     sync.Mutex // protects folder and closeF
	folder *micro.Folder
	closeF func()

	stop chan struct{}
	done chan struct{}
}

var _ fs.FileStoreSwitch = (*hostedFiles)(nil)

// followPeriod is how often hostedFiles looks at the service's state.
const followPeriod = 300 * time.Millisecond

func newHostedFiles(ctx context.Context, host *services.Host, socket string) *hostedFiles {
	h := &hostedFiles{socket: socket, host: host, stop: make(chan struct{}), done: make(chan struct{})}
	h.sync(ctx)
	go h.follow(ctx)
	return h
}

// running reports whether the host runs a micro-object server.
func (h *hostedFiles) running() bool {
	for _, s := range h.host.All() {
		if s.State == services.Running && s.ClassID == objects.ClassMOServer {
			return true
		}
	}
	return false
}

// sync connects or lets go, to match the service's state.
func (h *hostedFiles) sync(ctx context.Context) {
	run := h.running()
	h.mu.Lock()
	connected := h.folder != nil
	h.mu.Unlock()
	switch {
	case run && !connected:
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		folder, closeF, err := openFolder(cctx, h.socket)
		cancel()
		if err != nil {
			slog.Debug("files/: micro-object server not reachable yet", "socket", h.socket, "err", err)
			return
		}
		h.mu.Lock()
		h.folder, h.closeF = folder, closeF
		h.mu.Unlock()
		slog.Info("files/: the micro-object server's files are shown", "socket", h.socket)
	case !run && connected:
		h.mu.Lock()
		closeF := h.closeF
		h.folder, h.closeF = nil, nil
		h.mu.Unlock()
		closeF()
		slog.Info("files/: the micro-object server stopped; files/ is gone")
	}
}

func (h *hostedFiles) follow(ctx context.Context) {
	defer close(h.done)
	t := time.NewTicker(followPeriod)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			h.sync(ctx)
		case <-h.stop:
			return
		case <-ctx.Done():
			return
		}
	}
}

// Close stops following and lets go of the server.
func (h *hostedFiles) Close() {
	close(h.stop)
	<-h.done
	h.mu.Lock()
	closeF := h.closeF
	h.folder, h.closeF = nil, nil
	h.mu.Unlock()
	if closeF != nil {
		closeF()
	}
}

func (h *hostedFiles) current() *micro.Folder {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.folder
}

// errFilesOff is what reads and writes in files/ get while the server is
// off.
var errFilesOff = errors.New("the micro-object server of this root is not running; switch it on with 'liveobjects service on ROOT mo'")

// On reports whether the server's files are shown.
func (h *hostedFiles) On() bool { return h.current() != nil }

// Names lists the files (none while the server is off).
func (h *hostedFiles) Names() []string {
	if f := h.current(); f != nil {
		return f.Names()
	}
	return nil
}

// Size is a file's size (0 while the server is off).
func (h *hostedFiles) Size(name string) int64 {
	if f := h.current(); f != nil {
		return f.Size(name)
	}
	return 0
}

// ModTime is when the folder last saw a file change (zero while the
// server is off).
func (h *hostedFiles) ModTime(name string) time.Time {
	if f := h.current(); f != nil {
		return f.ModTime(name)
	}
	return time.Time{}
}

// Token is a file's printed token ("" while the server is off).
func (h *hostedFiles) Token(name string) string {
	if f := h.current(); f != nil {
		return f.Token(name)
	}
	return ""
}

// Remove stops the server's sharing of a file.
func (h *hostedFiles) Remove(ctx context.Context, name string) error {
	if f := h.current(); f != nil {
		return f.Remove(ctx, name)
	}
	return errFilesOff
}

// Read returns a file's content.
func (h *hostedFiles) Read(ctx context.Context, name string) ([]byte, error) {
	if f := h.current(); f != nil {
		return f.Read(ctx, name)
	}
	return nil, errFilesOff
}

// Write replaces a file's content.
func (h *hostedFiles) Write(ctx context.Context, name string, data []byte) error {
	if f := h.current(); f != nil {
		return f.Write(ctx, name, data)
	}
	return errFilesOff
}
