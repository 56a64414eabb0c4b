package transport

import (
	"context"
	"errors"
	"strings"
)

// Guarantee is one property a communication driver may provide and an
// object's type may require. Guarantees form a set; a driver satisfies a
// requirement when it provides every guarantee the requirement names, with
// the implications below taken into account (TotalOrder implies FIFO,
// FIFO implies Reliable, VirtualSynchrony implies Membership).
//
// ONLY APPEND TO THIS LIST: the bit values are stored in files and sent on
// the wire.
type Guarantee uint32

const (
	// Reliable: every event published while a member is joined reaches it,
	// despite loss in the network.
	Reliable Guarantee = 1 << iota
	// FIFO: events from one publisher arrive in the order it published them.
	FIFO
	// TotalOrder: all members deliver all events in one shared order.
	TotalOrder
	// StateTransfer: a joiner receives a checkpoint consistent with a point
	// in the event stream, then every event after that point.
	StateTransfer
	// Membership: members learn who else is joined (numbered views).
	Membership
	// VirtualSynchrony: view changes are delivered in the same place in the
	// event stream at every member.
	VirtualSynchrony
)

var guaranteeNames = []struct {
	g    Guarantee
	name string
}{
	{Reliable, "reliable"},
	{FIFO, "fifo"},
	{TotalOrder, "total-order"},
	{StateTransfer, "state-transfer"},
	{Membership, "membership"},
	{VirtualSynchrony, "virtual-synchrony"},
}

// Closure returns g with every implied guarantee added.
func (g Guarantee) Closure() Guarantee {
	if g&VirtualSynchrony != 0 {
		g |= Membership | TotalOrder
	}
	if g&TotalOrder != 0 {
		g |= FIFO
	}
	if g&FIFO != 0 {
		g |= Reliable
	}
	return g
}

// Satisfies reports whether a driver providing g meets requirement req.
func (g Guarantee) Satisfies(req Guarantee) bool {
	return req.Closure()&^g.Closure() == 0
}

// Missing returns the guarantees of req that g does not provide.
func (g Guarantee) Missing(req Guarantee) Guarantee {
	return req.Closure() &^ g.Closure()
}

// String lists the guarantees by name, joined with "+"; "none" when empty.
func (g Guarantee) String() string {
	var parts []string
	for _, n := range guaranteeNames {
		if g&n.g != 0 {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "+")
}

// ParseGuarantees parses names joined by "+" or "," (as String writes them).
func ParseGuarantees(s string) (Guarantee, error) {
	var g Guarantee
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == '+' || r == ',' || r == ' ' }) {
		found := false
		for _, n := range guaranteeNames {
			if strings.EqualFold(f, n.name) {
				g |= n.g
				found = true
			}
		}
		if !found && f != "none" {
			return 0, errors.New("transport: unknown guarantee " + `"` + f + `"` + " (want reliable, fifo, total-order, state-transfer, membership or virtual-synchrony)")
		}
	}
	return g, nil
}

// Event is one message in a channel.
type Event struct {
	// Seq is the event's position. Under TotalOrder it is the channel-wide
	// sequence number assigned by the driver, the same at every member;
	// otherwise it is the per-sender sequence number.
	Seq uint64
	// Sender identifies the publishing process (driver specific, may be empty).
	Sender string
	// Data is the payload. The receiver owns it, except in a Borrower,
	// which may use it only until the call that handed it over returns.
	Data []byte
}

// Handler is the object logic a driver delivers to. A driver calls the
// methods of one Handler from one goroutine at a time, in stream order, so
// that a checkpoint taken after Deliver(s) is consistent with s. Handlers
// must not block for long: a blocked handler delays its own channel only
// (drivers keep a bounded queue per member and fall back to state transfer
// when it overflows).
type Handler interface {
	// Deliver is called once for every event, in the driver's order.
	Deliver(ev Event)
	// Checkpoint returns the state after every event delivered so far. It is
	// called only by drivers with StateTransfer. A Handler with no state
	// returns nil, nil.
	Checkpoint() ([]byte, error)
	// Restore replaces the state with a checkpoint taken after event seq;
	// the next delivered event is seq+1. Drivers call it on join and when a
	// member fell behind. cp may be nil (empty state).
	Restore(cp []byte, seq uint64) error
}

// BatchHandler is a Handler that takes a run of consecutive events in one
// call. A driver that delivers in batches calls DeliverBatch instead of
// Deliver for each event of a run when its Handler implements it; the
// events follow every rule of Deliver. The Handler owns each event's
// Data, not the slice, which the driver reuses.
type BatchHandler interface {
	Handler
	DeliverBatch(evs []Event)
}

// Borrower is a Handler that keeps no event's Data once the Deliver or
// DeliverBatch call that handed it over has returned (what it needs later
// it copies). A driver may then lend it the driver's own bytes for the
// length of the call, instead of a copy made for it; other drivers ignore
// the method. A Borrower must not write to Data, lent or not: a lent
// payload may also be the driver's copy for repairing other members.
type Borrower interface {
	Handler
	// BorrowsData marks the Handler; it is never called.
	BorrowsData()
}

// Member is a process's membership in one channel, returned by Join.
type Member interface {
	// Publish sends data as one event. It returns once the driver has the
	// event in its order (for the relay: the relay has assigned it a
	// sequence number, and has it on disk when durable), with that number.
	Publish(ctx context.Context, data []byte) (seq uint64, err error)
	// Leave ends the membership. No Handler call starts after it returns.
	// It is idempotent.
	Leave() error
}

// Driver is a communication driver: one instance per process per
// substrate, carrying every channel of the process (for the relay, over
// one TCP connection). Drivers are safe for concurrent use.
type Driver interface {
	// Name is a short name for messages: "relay", "qsm".
	Name() string
	// Provides lists the guarantees the driver gives every channel.
	Provides() Guarantee
	// Join joins channel and starts delivering to h. For drivers with
	// StateTransfer, h.Restore has been called with the channel's state
	// before Join returns, and events after it follow.
	Join(ctx context.Context, channel string, h Handler) (Member, error)
	// Close leaves every channel and releases the driver's connections.
	// It is idempotent.
	Close() error
}

// Channel-level management that not every driver offers.
type ChannelInfo struct {
	// Name is the channel's name (or its 32-hex-digit ID when unnamed).
	Name string
	// ID is the channel's 32-hex-digit identifier, when it has one.
	ID string
	// Comment is free text from the channel's metadata.
	Comment string
	// Members is the number of joined members, when known (-1 otherwise).
	Members int
	// LastSeq is the last assigned sequence number, when known.
	LastSeq uint64
}

// Lister is implemented by drivers that can list the channels they carry.
type Lister interface {
	Channels(ctx context.Context) ([]ChannelInfo, error)
}

// Ender is implemented by drivers and members that can end without being
// told to: a member whose channel was removed, or whose join the relay
// refused after a reconnection; a driver whose link is lost for good
// (QSM's client when its local service goes away) and its members. Done
// is closed once the driver or member can no longer be used, whether it
// ended on its own or by Close or Leave; Err then says why (an error
// matching ErrNoChannel when the channel was removed). A driver that
// reconnects by itself (the relay's client) does not implement it.
type Ender interface {
	Done() <-chan struct{}
	Err() error
}

// Errors every driver uses, so callers can test for them with errors.Is.
var (
	// ErrClosed is returned by calls on a closed driver or a left member.
	ErrClosed = errors.New("transport: closed")
	// ErrNoChannel is returned when a channel does not exist and the driver
	// may not create it.
	ErrNoChannel = errors.New("transport: no such channel")
	// ErrTooLarge is returned when an event exceeds the driver's maximum size.
	ErrTooLarge = errors.New("transport: event too large")
	// ErrDenied is returned when authorization fails.
	ErrDenied = errors.New("transport: not authorized")
)

// BatchPublisher is implemented by members that can publish several events
// with one round trip. The events enter the order in the given sequence
// (others' events may fall between them); it returns the sequence number
// of the last one once all are in the order.
type BatchPublisher interface {
	PublishBatch(ctx context.Context, data [][]byte) (lastSeq uint64, err error)
}

// AsyncPublisher is implemented by members that can pipeline publishes.
// PublishAsync queues data behind every earlier call on the same member
// (the events enter the order in call order) and returns; done is called
// once, from a driver goroutine, when the event is in the order or has
// failed. done must not block.
type AsyncPublisher interface {
	PublishAsync(ctx context.Context, data []byte, done func(seq uint64, err error)) error
}
