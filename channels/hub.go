package channels

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/liveobjects/liveobjects/objects/logic"
	"github.com/liveobjects/liveobjects/transport"
)

// DialFunc connects to a communication substrate. driver is "relay" or
// "qsm"; params are the driver's parameters from the object's definition
// (e.g. "address").
type DialFunc func(ctx context.Context, driver string, params map[string]string) (transport.Driver, error)

// Spec says which channel a live object runs over and with what logic.
type Spec struct {
	// Object names the object in messages (e.g. "examples/chat").
	Object string
	// Driver and Params select the substrate.
	Driver string
	Params map[string]string
	// Channel is the channel's key on the substrate.
	Channel string
	// ChannelName is the channel's human name, for messages.
	ChannelName string
	// Logic configures the object logic.
	Logic logic.Config
	// Check, when set, is called with the driver's guarantees before
	// joining; an error refuses the join.
	Check func(driver string, provides transport.Guarantee) error
}

// displayName is the channel's name for messages.
func (s Spec) displayName() string {
	if s.ChannelName != "" {
		return s.ChannelName
	}
	return s.Channel
}

func (s Spec) driverKey() string {
	keys := make([]string, 0, len(s.Params))
	for k := range s.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(s.Driver)
	for _, k := range keys {
		fmt.Fprintf(&b, "\x00%s=%s", k, s.Params[k])
	}
	return b.String()
}

// channelKey names the channel on its substrate: a process holds one
// membership per channel key.
func (s Spec) channelKey() string {
	return s.driverKey() + "\x01" + s.Channel
}

// logicKey is what a live object's users must agree on: its kind and, for
// a stream, the history it keeps (other kinds keep one value).
func (s Spec) logicKey() string {
	h := s.Logic.History
	if s.Logic.Kind != logic.Stream {
		h = 0
	}
	return fmt.Sprintf("%s (history %d)", s.Logic.Kind, h)
}

// Errors returned by a Hub.
var (
	// ErrClosed is returned by a closed Hub.
	ErrClosed = errors.New("channels: hub closed")
	// ErrConflict is returned by Acquire when the channel is already
	// joined in this process for an object of another kind or history.
	ErrConflict = errors.New("channels: channel already joined as another kind of object")
	// ErrEnded is what the readers of a live object get when its
	// membership ended on its own: its driver lost its link for good, or
	// the relay refused its join after a reconnection.
	ErrEnded = errors.New("channels: the membership ended")
)

// Options tune a Hub.
type Options struct {
	// JoinTimeout bounds dialing and joining (0: 10s).
	JoinTimeout time.Duration
	// Logger receives the Hub's messages (nil: slog.Default()).
	Logger *slog.Logger
}

// Hub is a process's communication client.
type Hub struct {
	dial DialFunc
	opts Options

	mu      sync.Mutex // protects drivers, live, closed
	drivers map[string]*driverEntry
	live    map[string]*Live
	closed  bool
}

type driverEntry struct {
	ready chan struct{} // closed when d or err is set
	d     transport.Driver
	err   error
}

// NewHub returns a Hub that dials substrates with dial.
func NewHub(dial DialFunc, opts Options) *Hub {
	if opts.JoinTimeout <= 0 {
		opts.JoinTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Hub{dial: dial, opts: opts, drivers: map[string]*driverEntry{}, live: map[string]*Live{}}
}

// Driver returns the driver for spec's substrate, dialing it on first use.
// A failed dial is not cached: the next call dials again.
func (h *Hub) Driver(ctx context.Context, spec Spec) (transport.Driver, error) {
	for {
		d, retry, err := h.driver(ctx, spec)
		if !retry {
			return d, err
		}
	}
}

// driver is one attempt of Driver. It asks for a retry when it waited for
// another caller's dial that failed because that caller gave up: the
// failure says nothing about the substrate, and this caller has not.
func (h *Hub) driver(ctx context.Context, spec Spec) (transport.Driver, bool, error) {
	key := spec.driverKey()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, false, ErrClosed
	}
	e, ok := h.drivers[key]
	if !ok {
		e = &driverEntry{ready: make(chan struct{})}
		h.drivers[key] = e
		h.mu.Unlock()
		dctx, cancel := context.WithTimeout(ctx, h.opts.JoinTimeout)
		e.d, e.err = h.dial(dctx, spec.Driver, spec.Params)
		cancel()
		if e.err != nil {
			where := spec.Driver
			if a := spec.Params["address"]; a != "" {
				where += " " + a
			}
			e.err = fmt.Errorf("channels: connect to %s: %w", where, e.err)
			h.mu.Lock()
			delete(h.drivers, key)
			h.mu.Unlock()
		}
		close(e.ready)
	} else {
		h.mu.Unlock()
	}
	select {
	case <-e.ready:
		if ok && errors.Is(e.err, context.Canceled) && ctx.Err() == nil {
			return nil, true, nil
		}
		if ok && e.d != nil && ended(e.d) {
			// Its link is lost for good (a QSM client whose service
			// went away): dial afresh.
			h.mu.Lock()
			if h.drivers[key] == e {
				delete(h.drivers, key)
			}
			h.mu.Unlock()
			h.opts.Logger.Info("connecting again", "driver", spec.Driver, "after", e.d.(transport.Ender).Err())
			e.d.Close()
			return nil, true, nil
		}
		return e.d, false, e.err
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// ended reports whether d is a driver that has ended on its own.
func ended(d transport.Driver) bool {
	e, ok := d.(transport.Ender)
	if !ok {
		return false
	}
	select {
	case <-e.Done():
		return true
	default:
		return false
	}
}

// Live is one joined live object shared by its local users.
type Live struct {
	hub    *Hub
	key    string // the spec's channel key
	logic  string // the spec's logic key, which every user must share
	spec   Spec
	ready  chan struct{} // closed once the join finished (err or member set) and, on error, l is out of the table
	err    error
	obj    *logic.Object
	member transport.Member
	driver transport.Driver
	stop   chan struct{} // closed by leave

	mu   sync.Mutex // protects refs, left
	refs int
	left bool
}

// Acquire joins spec's channel, or shares the live object already joined
// for it. Every successful Acquire must be matched by one Release. An
// Acquire that is still joining when Close runs leaves the channel again
// and returns ErrClosed.
func (h *Hub) Acquire(ctx context.Context, spec Spec) (*Live, error) {
	key := spec.channelKey()
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, ErrClosed
		}
		l, ok := h.live[key]
		if ok && l.logic != spec.logicKey() {
			h.mu.Unlock()
			return nil, fmt.Errorf("%w: %s wants channel %q as a %s, and this process has it joined as a %s for %s: one process holds one membership per channel, so give the objects on one channel the same class (and, for streams, the same history)",
				ErrConflict, spec.Object, spec.displayName(), spec.logicKey(), l.logic, l.spec.Object)
		}
		if !ok {
			l = &Live{hub: h, key: key, logic: spec.logicKey(), spec: spec, ready: make(chan struct{}), stop: make(chan struct{}), refs: 1}
			h.live[key] = l
			h.mu.Unlock()
			l.join(ctx)
			h.mu.Lock()
			closed := h.closed
			if l.err != nil && h.live[key] == l {
				// Out of the table before anyone learns of the failure,
				// so that a waiter that retries joins afresh.
				delete(h.live, key)
			}
			h.mu.Unlock()
			if l.err == nil && closed {
				// Close ran during the join and waits for l.ready: leave
				// the membership here, before Close closes the driver,
				// and tell Close and any waiter that the hub is closed.
				l.mu.Lock()
				l.left = true
				l.mu.Unlock()
				l.leave()
				l.member, l.driver, l.err = nil, nil, ErrClosed
			}
			close(l.ready)
			if l.err != nil {
				return nil, l.err
			}
			if e, ok := l.member.(transport.Ender); ok {
				go l.watch(e)
			}
			return l, nil
		}
		h.mu.Unlock()
		select {
		case <-l.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if l.err != nil {
			if errors.Is(l.err, context.Canceled) && ctx.Err() == nil {
				// The user whose Acquire was joining gave up; this
				// one has not: join afresh.
				continue
			}
			return nil, l.err
		}
		if spec.Check != nil {
			// This object's needs are checked as a first joiner's are.
			if err := spec.Check(l.driver.Name(), l.driver.Provides()); err != nil {
				return nil, err
			}
		}
		l.mu.Lock()
		if l.left {
			l.mu.Unlock()
			continue // released meanwhile: join afresh
		}
		l.refs++
		l.mu.Unlock()
		return l, nil
	}
}

// join joins the channel, setting l.member or l.err; the caller closes
// l.ready.
func (l *Live) join(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, l.hub.opts.JoinTimeout)
	defer cancel()
	d, err := l.hub.Driver(ctx, l.spec)
	if err != nil {
		l.err = err
		return
	}
	if l.spec.Check != nil {
		if err := l.spec.Check(d.Name(), d.Provides()); err != nil {
			l.err = err
			return
		}
	}
	l.obj = logic.New(l.spec.Logic)
	m, err := d.Join(ctx, l.spec.Channel, l.obj)
	if err != nil {
		l.err = fmt.Errorf("%s: join channel %q over %s: %w", l.spec.Object, l.spec.displayName(), d.Name(), err)
		return
	}
	l.member, l.driver = m, d
	l.hub.opts.Logger.Debug("joined", "object", l.spec.Object, "channel", l.spec.Channel, "driver", d.Name())
}

// Object returns the live object's local replica.
func (l *Live) Object() *logic.Object { return l.obj }

// Spec returns what the live object was acquired with.
func (l *Live) Spec() Spec { return l.spec }

// DriverName returns the name of the driver carrying the object.
func (l *Live) DriverName() string { return l.driver.Name() }

// Publish sends one event and returns its sequence number.
func (l *Live) Publish(ctx context.Context, data []byte) (uint64, error) {
	return l.member.Publish(ctx, data)
}

// ownEventWait bounds how long PublishBatch waits for the local replica
// to apply what it published: the event is in the order by then, so a
// replica that is slow to see it (a relay that restarted and numbers
// anew) does not fail the publish.
const ownEventWait = 2 * time.Second

// PublishBatch sends events in order and returns once all are in the
// channel's order. It implements logic.Publisher. Over a driver with a
// total order it also waits, briefly (ownEventWait), for the local replica
// to apply the last of them, so that what this process reads next shows
// its own write ('echo 21.5 > f; cat f' prints 21.5).
func (l *Live) PublishBatch(ctx context.Context, events [][]byte) error {
	if len(events) == 0 {
		return nil
	}
	last, err := l.publish(ctx, events)
	if err != nil || last == 0 || l.driver.Provides()&transport.TotalOrder == 0 {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, ownEventWait)
	defer cancel()
	l.obj.WaitApplied(wctx, last)
	return nil
}

// publish sends events in order and returns the sequence number of the
// last one (0 when the driver does not say).
func (l *Live) publish(ctx context.Context, events [][]byte) (uint64, error) {
	if bp, ok := l.member.(transport.BatchPublisher); ok {
		return bp.PublishBatch(ctx, events)
	}
	if ap, ok := l.member.(transport.AsyncPublisher); ok && len(events) > 1 {
		return publishPipelined(ctx, ap, events)
	}
	if qp, ok := l.member.(queuePublisher); ok && len(events) > 1 {
		for _, ev := range events {
			if err := qp.PublishAsync(ctx, ev); err != nil {
				return 0, err
			}
		}
		return 0, qp.Flush(ctx)
	}
	var last uint64
	for _, ev := range events {
		seq, err := l.member.Publish(ctx, ev)
		if err != nil {
			return 0, err
		}
		last = seq
	}
	return last, nil
}

var _ logic.Publisher = (*Live)(nil)

// Release drops one reference; the last one leaves the channel and closes
// the local replica (its readers reach end of file).
func (l *Live) Release() {
	h := l.hub
	h.mu.Lock()
	l.mu.Lock()
	l.refs--
	last := l.refs == 0 && !l.left
	if last {
		l.left = true
		if h.live[l.key] == l {
			delete(h.live, l.key)
		}
	}
	l.mu.Unlock()
	h.mu.Unlock()
	if last {
		l.leave()
	}
}

// leave leaves the membership, logging a failure, and closes the object.
// It is called once, by whoever set l.left.
func (l *Live) leave() {
	close(l.stop)
	if err := l.member.Leave(); err != nil && !errors.Is(err, transport.ErrClosed) {
		l.hub.opts.Logger.Warn("leave failed", "object", l.spec.Object, "err", err)
	}
	l.obj.Close()
}

// watch waits for a membership that can end on its own (transport.Ender)
// to end, or for l to be left. A membership that ended while l was still
// in use takes l out of the table, so that the next Acquire joins afresh.
// When its channel was removed, the object's readers reach end of file;
// otherwise they end with ErrEnded: events may have been missed, so they
// do not simply go on. Writers' publishes fail from then on; each user's
// Release still leaves l.
func (l *Live) watch(e transport.Ender) {
	select {
	case <-e.Done():
	case <-l.stop:
		return
	}
	h := l.hub
	h.mu.Lock()
	l.mu.Lock()
	left := l.left
	if !left && h.live[l.key] == l {
		delete(h.live, l.key)
	}
	l.mu.Unlock()
	h.mu.Unlock()
	if left {
		return
	}
	if errors.Is(e.Err(), transport.ErrNoChannel) {
		h.opts.Logger.Info("channel removed", "object", l.spec.Object, "channel", l.spec.displayName(), "driver", l.driver.Name())
		l.obj.Close()
		return
	}
	h.opts.Logger.Warn("membership ended", "object", l.spec.Object, "channel", l.spec.displayName(), "driver", l.driver.Name(), "err", e.Err())
	l.obj.Fail(fmt.Errorf("%w: %s: channel %q over %s: %v; open the object again to join anew (events published meanwhile are not delivered here)",
		ErrEnded, l.spec.Object, l.spec.displayName(), l.driver.Name(), e.Err()))
}

// Joined returns the live objects currently joined, by object name.
func (h *Hub) Joined() []*Live {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*Live
	for _, l := range h.live {
		select {
		case <-l.ready:
			if l.err == nil {
				out = append(out, l)
			}
		default:
		}
	}
	return out
}

// Close leaves every channel, closes every replica and every driver.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	lives := h.live
	drivers := h.drivers
	h.live, h.drivers = map[string]*Live{}, map[string]*driverEntry{}
	h.mu.Unlock()
	for _, l := range lives {
		<-l.ready
		if l.err == nil {
			l.mu.Lock()
			l.left = true
			l.mu.Unlock()
			l.leave()
		}
	}
	var errs []error
	for _, e := range drivers {
		<-e.ready
		if e.d != nil {
			if err := e.d.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// queuePublisher is a member that queues publishes and reports their
// acceptance with Flush (the QSM client's Member).
type queuePublisher interface {
	PublishAsync(ctx context.Context, data []byte) error
	Flush(ctx context.Context) error
}

// publishPipelined sends events back to back and waits for every
// acknowledgement: one round trip for the batch instead of one per event.
func publishPipelined(ctx context.Context, ap transport.AsyncPublisher, events [][]byte) (uint64, error) {
	var (
		mu    sync.Mutex
		first error
		last  uint64
		wg    sync.WaitGroup
	)
	done := func(seq uint64, err error) {
		mu.Lock()
		if err != nil && first == nil {
			first = err
		}
		last = max(last, seq)
		mu.Unlock()
		wg.Done()
	}
	for _, ev := range events {
		wg.Add(1)
		if err := ap.PublishAsync(ctx, ev, done); err != nil {
			wg.Done()
			wg.Wait()
			return 0, err
		}
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return last, nil
}
