package qsm

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// connWriter batches frames for one TCP link: producers append to a
// buffer under mu, and one goroutine (loop, owned by whoever created the
// writer) writes whole buffers out, so many small frames cost one write.
type connWriter struct {
	conn   net.Conn
	notify chan struct{}

	mu     sync.Mutex // protects buf, closed, err
	buf    []byte
	closed bool
	err    error

	queued atomic.Int64 // bytes appended and not yet written
}

func newConnWriter(conn net.Conn) *connWriter {
	return &connWriter{conn: conn, notify: make(chan struct{}, 1)}
}

// frame appends one frame built by f (which appends to its argument).
// It returns the link's error, if it has failed.
func (w *connWriter) frame(f func(b []byte) []byte) error {
	w.mu.Lock()
	if w.closed {
		err := w.err
		w.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return err
	}
	n := len(w.buf)
	w.buf = f(w.buf)
	w.queued.Add(int64(len(w.buf) - n))
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
	return nil
}

// loop writes buffered frames until quit is closed (then it writes what
// is still queued and closes the connection) or a write fails; it
// returns the write error.
func (w *connWriter) loop(quit <-chan struct{}) error {
	spare := make([]byte, 0, 64<<10)
	for {
		select {
		case <-quit:
			// What was queued before the close still goes out (a
			// closing error frame, a client's last leaves), briefly.
			w.mu.Lock()
			out := w.buf
			w.buf = nil
			w.mu.Unlock()
			if len(out) > 0 {
				w.conn.SetWriteDeadline(time.Now().Add(time.Second))
				w.conn.Write(out)
			}
			w.fail(net.ErrClosed)
			return nil
		case <-w.notify:
		}
		for {
			w.mu.Lock()
			if len(w.buf) == 0 || w.closed {
				w.mu.Unlock()
				break
			}
			out := w.buf
			w.buf = spare[:0]
			w.mu.Unlock()
			w.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
			_, err := w.conn.Write(out)
			w.queued.Add(-int64(len(out)))
			if err != nil {
				w.fail(err)
				return err
			}
			// Reuse the buffer next time, unless it grew huge once.
			if cap(out) <= 64<<20 {
				spare = out[:0]
			} else {
				spare = make([]byte, 0, 1<<20)
			}
		}
		w.mu.Lock()
		closed := w.closed
		w.mu.Unlock()
		if closed {
			return w.err
		}
	}
}

// fail marks the writer closed with err and closes the connection.
func (w *connWriter) fail(err error) {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		w.err = err
		w.buf = nil
	}
	w.mu.Unlock()
	w.conn.Close()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}
