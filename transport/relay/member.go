package relay

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/liveobjects/liveobjects/transport"
)

// maxClientCheckpoint bounds a state the client accepts from the relay.
const maxClientCheckpoint = 1 << 34

// Member is a process's membership in one channel. Its Handler is called
// from one goroutine (owned by the Member, stopped by Leave or the
// client's Close), in stream order.
type Member struct {
	c    *Client
	name string
	h    transport.Handler

	joinReq uint64 // guarded by c.mu: the request id of the last join sent
	removed bool   // guarded by c.mu: no longer in c.members

	mu       sync.Mutex // protects the fields below
	q        []mitem    // items for the handler goroutine
	spare    []mitem
	nev      int    // events in q
	behind   bool   // dropped events; waiting for a state
	synced   bool   // has received a state: joins after a reconnect resume
	received uint64 // last sequence number accepted into q
	gen      uint64 // states received on the current connection
	asm      *stateAsm
	left     bool
	failErr  error
	restored bool // handler holds a state (set by the handler goroutine)

	callMu    sync.Mutex        // held during every Handler call
	evs       []transport.Event // a run of events for a BatchHandler (handler goroutine)
	stopped   atomic.Bool       // left, readable without mu (set under mu)
	delivered atomic.Uint64
	gid       atomic.Int64

	wake      chan struct{}
	ready     chan struct{} // closed once the first state is in the handler
	readyOnce sync.Once
	gone      chan struct{} // closed when the member ended
	goneOnce  sync.Once
	done      chan struct{} // closed when the handler goroutine returned
	started   bool
	leaveOnce sync.Once
	pubOnly   bool // a publisher only: no Handler, no events
}

// Kinds of mitem.
const (
	itemEvent = iota + 1
	itemState
	itemCkpt
)

type mitem struct {
	kind   int
	seq    uint64
	sender string
	data   []byte
	flags  byte
	id     uint64
	cc     *cconn
}

type stateAsm struct {
	seq   uint64
	total uint64
	buf   []byte
}

func newMember(c *Client, name string, h transport.Handler) *Member {
	return &Member{
		c:     c,
		name:  name,
		h:     h,
		wake:  make(chan struct{}, 1),
		ready: make(chan struct{}),
		gone:  make(chan struct{}),
		done:  make(chan struct{}),
	}
}

// Channel is the channel's name.
func (m *Member) Channel() string { return m.name }

// Delivered is the sequence number of the last event (or state) handed to
// the Handler.
func (m *Member) Delivered() uint64 { return m.delivered.Load() }

func (m *Member) start() {
	m.started = true
	go m.run()
}

func (m *Member) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// joinFrame encodes a join (a resume when the member has a state). c.mu is
// held by the caller.
func (m *Member) joinFrame(reqID, epoch uint64) []byte {
	m.mu.Lock()
	flags, from := byte(0), uint64(0)
	if m.synced {
		flags, from = joinResume, m.received
	}
	if m.pubOnly {
		flags = joinPublishOnly
	}
	m.mu.Unlock()
	b, off := beginFrame(nil, tJoin)
	b = putU64(b, reqID)
	b = putStr(b, m.name)
	b = putStr(b, m.c.cfg.Tokens[m.name])
	b = putU8(b, flags)
	b = putU64(b, epoch)
	b = putU64(b, from)
	return endFrame(b, off)
}

// resetStateAsm forgets per-connection state after a disconnect.
func (m *Member) resetStateAsm() {
	m.mu.Lock()
	m.asm = nil
	m.gen = 0
	m.behind = false
	m.mu.Unlock()
}

// pushEvents queues events (reader goroutine), with one lock and at most
// one wake-up per batch. It never blocks: past the queue bound the member
// asks the relay for a state and drops events until it arrives.
func (m *Member) pushEvents(cc *cconn, items []mitem) {
	m.mu.Lock()
	// The handler goroutine is woken when q becomes non-empty; until it
	// takes q, later events need no wake-up of their own.
	wake := len(m.q) == 0
	added := false
	for i := range items {
		it := &items[i]
		if m.left || m.behind || !m.synced {
			break
		}
		if it.seq != m.received+1 {
			if it.seq > m.received+1 {
				m.c.log.Error("relay: gap in the event stream; asking for a state", "channel", m.name, "got", it.seq, "want", m.received+1)
				m.behind = true
				m.resyncLocked(cc)
			}
			continue
		}
		if m.nev >= m.c.cfg.MemberQueue {
			m.c.log.Warn("relay: handler is slow; member fell behind, catching up by state transfer", "channel", m.name, "queued", m.nev)
			m.behind = true
			m.resyncLocked(cc)
			break
		}
		m.q = append(m.q, *it)
		m.nev++
		m.received = it.seq
		added = true
	}
	m.mu.Unlock()
	if wake && added {
		m.signal()
	}
}

func (m *Member) resyncLocked(cc *cconn) {
	received, gen, name := m.received, m.gen, m.name
	cc.enqueueFn(tResync, func(b []byte) []byte { return putU64(putU64(putStr(b, name), received), gen) })
}

// pushState assembles a state (reader goroutine).
func (m *Member) pushState(seq, total uint64, flags byte, chunk []byte) error {
	m.mu.Lock()
	if m.left {
		m.mu.Unlock()
		return nil
	}
	if m.asm == nil {
		if total > maxClientCheckpoint {
			m.mu.Unlock()
			return errf(CodeTooLarge, "state of %d bytes for channel %q", total, m.name)
		}
		m.asm = &stateAsm{seq: seq, total: total, buf: make([]byte, 0, min(total, 64<<20))}
	}
	a := m.asm
	if uint64(len(a.buf))+uint64(len(chunk)) > a.total || a.seq != seq {
		m.mu.Unlock()
		return errf(CodeProtocol, "state for channel %q does not match its announcement", m.name)
	}
	a.buf = append(a.buf, chunk...)
	if flags&chunkLast == 0 {
		m.mu.Unlock()
		return nil
	}
	m.asm = nil
	if uint64(len(a.buf)) != a.total {
		m.mu.Unlock()
		return errf(CodeProtocol, "state for channel %q is shorter than announced", m.name)
	}
	var data []byte
	if len(a.buf) > 0 {
		data = a.buf
	}
	m.gen++
	m.behind = false
	m.synced = true
	m.received = seq
	m.q = append(m.q, mitem{kind: itemState, seq: seq, data: data, flags: flags})
	m.mu.Unlock()
	m.signal()
	return nil
}

// pushCkptReq queues a checkpoint request in stream order.
func (m *Member) pushCkptReq(cc *cconn, id uint64) {
	m.mu.Lock()
	if m.left {
		m.mu.Unlock()
		return
	}
	m.q = append(m.q, mitem{kind: itemCkpt, id: id, cc: cc})
	m.mu.Unlock()
	m.signal()
}

// run is the handler goroutine.
func (m *Member) run() {
	defer close(m.done)
	m.gid.Store(goid())
	for {
		m.mu.Lock()
		for len(m.q) == 0 && !m.left {
			m.mu.Unlock()
			<-m.wake
			m.mu.Lock()
		}
		if m.left {
			m.mu.Unlock()
			return
		}
		items := m.q
		m.q = m.spare[:0]
		for i := range items {
			if items[i].kind == itemEvent {
				m.nev--
			}
		}
		m.mu.Unlock()
		// One lock of callMu per batch: Leave sets stopped and waits for
		// callMu, and the loop checks stopped before every call.
		m.callMu.Lock()
		if !m.handleAll(items) {
			m.callMu.Unlock()
			return
		}
		m.callMu.Unlock()
		clear(items)
		// items is no longer referenced by m.q: it becomes the spare (the
		// old spare is m.q now and must not be reused twice).
		m.mu.Lock()
		if cap(items) <= 4096 {
			m.spare = items[:0]
		} else {
			m.spare = nil
		}
		m.mu.Unlock()
	}
}

// maxBatch bounds the events of one DeliverBatch call, so that a Handler
// holding a lock while it applies them does not hold it for long.
const maxBatch = 256

// handleAll makes the Handler calls for items (callMu held): runs of
// events go in one call to a BatchHandler. False ends the goroutine.
func (m *Member) handleAll(items []mitem) bool {
	bh, batches := m.h.(transport.BatchHandler)
	for i := 0; i < len(items); {
		if !batches || items[i].kind != itemEvent {
			if !m.handle(&items[i]) {
				return false
			}
			i++
			continue
		}
		if m.stopped.Load() {
			return false
		}
		evs := m.evs[:0]
		for ; i < len(items) && items[i].kind == itemEvent && len(evs) < maxBatch; i++ {
			it := &items[i]
			evs = append(evs, transport.Event{Seq: it.seq, Sender: it.sender, Data: it.data})
		}
		bh.DeliverBatch(evs)
		m.delivered.Store(evs[len(evs)-1].Seq)
		clear(evs)
		m.evs = evs[:0]
	}
	return true
}

// handle makes one Handler call (callMu held); false ends the goroutine.
func (m *Member) handle(it *mitem) bool {
	if m.stopped.Load() {
		return false
	}
	switch it.kind {
	case itemEvent:
		m.h.Deliver(transport.Event{Seq: it.seq, Sender: it.sender, Data: it.data})
		m.delivered.Store(it.seq)
	case itemState:
		if it.flags&stateNone == 0 {
			if it.flags&stateBehind != 0 {
				m.c.log.Warn("relay: member fell behind; restoring a newer state", "channel", m.name, "seq", it.seq, "delivered", m.delivered.Load())
			}
			if err := m.h.Restore(it.data, it.seq); err != nil {
				err = fmt.Errorf("relay: restore channel %s at %d: %w", m.name, it.seq, err)
				m.c.log.Error("relay: handler could not restore a state; leaving the channel", "err", err)
				go m.failAndLeave(err)
				return false
			}
		}
		m.delivered.Store(it.seq)
		m.mu.Lock()
		m.restored = true
		m.mu.Unlock()
		m.readyOnce.Do(func() { close(m.ready) })
	case itemCkpt:
		m.answerCheckpoint(it.cc, it.id)
	}
	return true
}

// answerCheckpoint asks the Handler for a checkpoint and sends it in
// chunks, marked with the last delivered sequence number.
func (m *Member) answerCheckpoint(cc *cconn, id uint64) {
	m.mu.Lock()
	restored := m.restored
	m.mu.Unlock()
	seq := m.delivered.Load()
	name := m.name
	fail := func() {
		cc.enqueueFn(tCkptData, func(b []byte) []byte {
			return putBytes(putU8(putU64(putU64(putU64(putStr(b, name), id), 0), 0), chunkFailed|chunkLast), nil)
		})
	}
	if !restored {
		fail()
		return
	}
	data, err := m.h.Checkpoint()
	if err != nil {
		m.c.log.Debug("relay: handler gave no checkpoint", "channel", name, "err", err)
		fail()
		return
	}
	total := uint64(len(data))
	for off := 0; ; {
		n := min(chunkSize, len(data)-off)
		flags := byte(0)
		if off+n == len(data) {
			flags = chunkLast
		}
		chunk := data[off : off+n]
		hdr, hoff := beginFrame(make([]byte, 0, 48+len(name)), tCkptData)
		hdr = putUvarint(putU8(putU64(putU64(putU64(putStr(hdr, name), id), seq), total), flags), uint64(n))
		binaryPutLen(hdr, hoff, len(hdr)-hoff-4+n)
		cc.enqueueRef(hdr, chunk)
		off += n
		if flags&chunkLast != 0 {
			return
		}
	}
}

// fail ends the member with err (from the relay).
func (m *Member) fail(err error) {
	m.c.log.Warn("relay: membership ended by the relay", "channel", m.name, "err", err)
	m.c.removeMember(m, err)
	m.stop(err)
}

func (m *Member) failAndLeave(err error) {
	cc, reqID := m.c.removeMember(m, err)
	if cc != nil {
		name := m.name
		cc.enqueueFn(tLeave, func(b []byte) []byte { return putStr(putU64(b, reqID), name) })
	}
	m.stop(err)
}

// stop marks the member ended and wakes its goroutine.
func (m *Member) stop(err error) {
	m.mu.Lock()
	if !m.left {
		m.left = true
		m.stopped.Store(true)
		m.failErr = err
	}
	m.mu.Unlock()
	m.goneOnce.Do(func() { close(m.gone) })
	m.signal()
}

// Done returns a channel that is closed when the membership ends: by
// Leave, by the client's Close, or by the relay (the channel was removed,
// a join after a reconnection was refused, ...). Err then says why.
func (m *Member) Done() <-chan struct{} { return m.gone }

// Err returns nil while the membership lasts. Once Done is closed it
// returns why it ended: transport.ErrClosed after Leave or the client's
// Close; the relay's *Error when the relay ended it (its Code is
// CodeRemoved when the channel was removed); or the Handler's error when
// its Restore failed.
func (m *Member) Err() error {
	m.mu.Lock()
	left := m.left
	m.mu.Unlock()
	if !left {
		return nil
	}
	return m.err()
}

// err is why the membership ended (transport.ErrClosed unless the relay
// or the Handler gave a reason).
func (m *Member) err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failErr == nil {
		return transport.ErrClosed
	}
	return m.failErr
}

// wait waits for the handler goroutine, unless called from it.
func (m *Member) wait() {
	if !m.started || goid() == m.gid.Load() {
		return
	}
	<-m.done
}

// Leave ends the membership. No Handler call starts after it returns; a
// call in progress on another goroutine is waited for. It may be called
// from the member's own Handler. Idempotent.
func (m *Member) Leave() error {
	m.leaveOnce.Do(func() {
		cc, reqID := m.c.removeMember(m, transport.ErrClosed)
		if cc != nil {
			name := m.name
			cc.enqueueFn(tLeave, func(b []byte) []byte { return putStr(putU64(b, reqID), name) })
		}
		m.stop(transport.ErrClosed)
		if goid() != m.gid.Load() {
			m.callMu.Lock()
			m.callMu.Unlock() //nolint:staticcheck // waits for a running call
		}
	})
	return nil
}

// Publish sends data as one event and returns its sequence number once the
// relay has it in the order (on disk when the relay is durable). While the
// connection is down it waits for it, bounded by ctx; after a reconnect the
// event is resent and applied at most once. When ctx ends after the event
// was sent, it may still be published.
func (m *Member) Publish(ctx context.Context, data []byte) (uint64, error) {
	type res struct {
		seq uint64
		err error
	}
	ch := make(chan res, 1)
	counter, err := m.publishAsync(ctx, data, func(seq uint64, err error) { ch <- res{seq, err} })
	if err != nil {
		return 0, fmt.Errorf("relay: publish %s: %w", m.name, err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return 0, fmt.Errorf("relay: publish %s: %w", m.name, r.err)
		}
		return r.seq, nil
	case <-ctx.Done():
		m.c.cancelPub(counter)
		return 0, fmt.Errorf("relay: publish %s: %w", m.name, ctx.Err())
	}
}

// PublishAsync sends data as one event without waiting: done is called
// with the sequence number (or an error) once the relay has acknowledged
// it. done is called from the client's reader goroutine and must not block
// or call the Client. PublishAsync waits (bounded by ctx) only when
// MaxInFlight publishes are unacknowledged.
func (m *Member) PublishAsync(ctx context.Context, data []byte, done func(seq uint64, err error)) error {
	_, err := m.publishAsync(ctx, data, done)
	if err != nil {
		return fmt.Errorf("relay: publish %s: %w", m.name, err)
	}
	return nil
}

func (m *Member) publishAsync(ctx context.Context, data []byte, done func(uint64, error)) (uint64, error) {
	c := m.c
	maxEvent := int(c.maxEvent.Load())
	if len(data) > maxEvent {
		return 0, errf(CodeTooLarge, "event of %d bytes exceeds the relay's limit of %d", len(data), maxEvent)
	}
	c.mu.Lock()
	if err := c.takeSlotLocked(ctx); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	if c.closed || m.removed {
		c.releaseSlotLocked()
		c.mu.Unlock()
		if c.closed {
			return 0, transport.ErrClosed
		}
		return 0, m.err()
	}
	c.next++
	counter := c.next
	size := 4 + 1 + 8 + uvarintLen(len(m.name)) + len(m.name) + uvarintLen(len(data)) + len(data)
	b, seg, slab := c.carve(size)
	b, off := beginFrame(b, tPublish)
	b = putU64(b, counter)
	b = putStr(b, m.name)
	b = putBytes(b, data)
	b = endFrame(b, off)
	var p *pub
	if k := len(c.freePubs); k > 0 {
		p = c.freePubs[k-1]
		c.freePubs = c.freePubs[:k-1]
	} else {
		p = new(pub)
	}
	*p = pub{counter: counter, m: m, frame: b, slab: slab, done: done}
	c.pubs.push(p)
	if c.cc != nil {
		p.sent = true
		if len(b) == len(seg) {
			c.cc.enqueuePub(seg)
		} else {
			c.cc.enqueue(b)
		}
	}
	c.mu.Unlock()
	return counter, nil
}

// cancelPub drops a publish that was never sent.
func (c *Client) cancelPub(counter uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.pubs.get(counter); p != nil && !p.sent {
		c.pubs.take(counter)
		c.dropPubLocked(p)
	}
}

// goid returns the current goroutine's id. It is used only to let Leave
// and Close be called from a Handler without waiting for themselves.
func goid() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseInt(string(b), 10, 64)
	return id
}
