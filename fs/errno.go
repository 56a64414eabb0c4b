package fs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/objects/logic"
	"github.com/liveobjects/liveobjects/transport"
)

// errno maps an error from the layers below onto the errno a shell
// understands, and logs it (the shell shows only the errno). Anything
// unknown becomes EIO.
func errno(op, path string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	switch {
	case errors.As(err, &e):
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, context.DeadlineExceeded):
		e = syscall.ETIMEDOUT
	case errors.Is(err, transport.ErrNoChannel):
		e = syscall.ENOENT
	case errors.Is(err, transport.ErrDenied):
		e = syscall.EACCES
	case errors.Is(err, transport.ErrTooLarge):
		e = syscall.EFBIG
	case errors.Is(err, errBadDefinition):
		e = syscall.EINVAL
	case errors.Is(err, errNotLive), errors.Is(err, objects.ErrMismatch), errors.Is(err, objects.ErrUnknownClass):
		e = syscall.ENOTSUP
	case errors.Is(err, channels.ErrConflict):
		e = syscall.EBUSY
	case errors.Is(err, transport.ErrClosed), errors.Is(err, channels.ErrClosed):
		e = syscall.ESHUTDOWN
	case errors.Is(err, logic.ErrOverrun):
		e = syscall.EIO
	default:
		e = syscall.EIO
	}
	slog.Warn("liveobjects: "+op+" failed", "path", path, "err", err, "errno", e.Error())
	return e
}
