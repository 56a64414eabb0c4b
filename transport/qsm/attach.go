package qsm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/internal/payload"
)

// Attach returns a client of this service in the same process: QSM used
// as a library. It behaves as a client from Dial does, and other
// processes' clients of the service see no difference, but the service
// hands it events directly: no socket, no encoding of deliveries, one
// copy of each payload (the one its handler owns), or none for a handler
// that is a transport.Borrower (it is lent the service's). Its handlers run on
// its own dispatch goroutines, never on the service's. Close the client
// before the service, or it fails when the service closes.
func (s *Service) Attach(ctx context.Context) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !s.uaddr.IsValid() {
		return nil, errors.New("qsm: attach: the service is not started (call Start first)")
	}
	// The client's frames (joins, publishes, requests) reach the service
	// through a pipe, read as a socket client's are; the service's reach
	// the client through the link.
	cconn, sconn := net.Pipe()
	c := newClient(cconn, s.id, s.name, s.cfg.MaxEvent, s.cfg.ClientCredits, ProtocolVersionMax)
	l := &directLink{r: newReceiver(c, false)}
	sc := &svcClient{id: clientIDs.Add(1), name: "attached", conn: sconn, direct: l, quit: make(chan struct{})}
	s.connMu.Lock()
	select {
	case <-s.quit:
		s.connMu.Unlock()
		sconn.Close()
		c.Close()
		return nil, fmt.Errorf("qsm: attach: %w: the service is closed", transport.ErrClosed)
	default:
	}
	s.conns[sconn] = true
	s.connMu.Unlock()
	s.goroutine(func() {
		defer func() {
			s.connMu.Lock()
			delete(s.conns, sconn)
			s.connMu.Unlock()
			sconn.Close()
			l.close(net.ErrClosed)
		}()
		s.serveLink(sc, newFrameReader(sconn, s.cfg.MaxEvent+64))
	})
	return c, nil
}

// directLink carries a service's frames to a client attached in the same
// process. The service's goroutines (the engine, the reader of the
// client's frames, the coordinator link's) hand it frames one at a time
// under mu; the client's receiver acts on them as its readLoop would.
// Deliveries skip the encoding: the engine calls deliver, and the events
// collected go to the client's workers when the engine flushes, without
// waiting (the engine must not block on a handler; the bytes the workers
// hold count as the client's queue, so a slow handler makes the service
// refuse data, to be repaired later, as a slow socket client does).
type directLink struct {
	mu      sync.Mutex // protects the fields below and r
	r       *receiver
	closed  bool
	scratch []byte
}

// frame hands the client the frame built by f.
func (l *directLink) frame(f func(b []byte) []byte) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return net.ErrClosed
	}
	buf := f(l.scratch[:0])
	b := buf
	var err error
	for len(b) > 0 && err == nil {
		n := 0
		if len(b) >= 5 {
			n = int(binary.BigEndian.Uint32(b))
		}
		if n < 1 || 4+n > len(b) {
			err = fmt.Errorf("%w: service built a bad frame", ErrMalformed)
			break
		}
		err = l.r.handle(b[4], b[5:4+n])
		b = b[4+n:]
	}
	if cap(buf) <= 1<<20 {
		l.scratch = buf[:0] // reused for the next frame; a huge one is let go
	}
	l.mu.Unlock()
	if err != nil {
		l.close(err)
	}
	return err
}

// deliver collects an event for member id (engine goroutine); blk is the
// block data was cut from, or nil.
func (l *directLink) deliver(id uint32, node uint64, source uint32, seq uint64, data []byte, blk *payload.Block) {
	l.mu.Lock()
	if !l.closed {
		l.r.deliver(id, node, source, seq, data, blk)
		if l.r.npending >= handOverAt {
			l.r.handOver()
		}
	}
	l.mu.Unlock()
}

// flush hands the collected events to the client's workers (engine
// goroutine, after each batch of work).
func (l *directLink) flush() {
	l.mu.Lock()
	if l.r.npending > 0 {
		l.r.handOver()
	}
	l.mu.Unlock()
}

// queued returns the payload bytes the client's workers hold.
func (l *directLink) queued() int64 {
	var n int64
	for _, w := range l.r.c.workers {
		n += w.bytes.Load()
	}
	return n
}

// close ends the link: what was collected still goes to the workers, and
// the client fails with err (unless it has closed itself).
func (l *directLink) close(err error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.r.handOver()
	l.mu.Unlock()
	l.r.c.linkLost(err)
}
