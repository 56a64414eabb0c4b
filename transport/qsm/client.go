package qsm

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/internal/payload"
)

// Client is the in-process QSM client: one per process, one TCP link to
// the node's local service carrying every QSM channel of the process. It
// implements transport.Driver.
//
// Guarantees (Provides): reliable delivery to the current members, FIFO
// per sender, numbered membership views. No total order and no state
// transfer: a joiner receives the events published after its join.
type Client struct {
	conn     net.Conn
	w        *connWriter
	node     uint64
	nodeName string
	maxEvent int
	credits  int
	version  uint8 // the protocol version spoken with the service

	quit    chan struct{}
	ended   chan struct{} // closed by shutdown: the client can no longer be used (Done)
	endOnce sync.Once
	wg      sync.WaitGroup
	closed  sync.Once
	workers []*worker
	sem     chan struct{} // one token per publish in flight, shared by all members

	byID memberTable // members by id, read without mu (written under it)

	mu      sync.Mutex // protects the fields below
	members map[uint32]*Member
	joins   map[uint32]chan error
	replies map[uint32]chan []byte // requests waiting for the service's reply (stats, channel lists)
	nextID  uint32
	err     error // why the link closed
}

var (
	_ transport.Driver = (*Client)(nil)
	_ transport.Lister = (*Client)(nil)
)

// maxQueue caps the events queued for one dispatch worker; above it the
// client stops reading from the service (which then slows the senders).
var maxQueue = 1 << 16 // a variable so tests can make it small

// dispatchWorkers is the number of goroutines that call handlers. A member
// always goes to the same worker, so its events stay in order; a handler
// that blocks holds up the members that share its worker.
const dispatchWorkers = 4

// Dial connects to the local service at serviceAddr (host:port, the
// service's uplink) and returns a client. When the service listens on a
// local socket for that address (Config.UplinkLocal) and the caller is in
// its network namespace, the client uses it instead of TCP.
func Dial(ctx context.Context, serviceAddr string) (*Client, error) {
	var d net.Dialer
	var conn net.Conn
	var err error
	if name := localUplinkName(serviceAddr); name != "" {
		conn, err = d.DialContext(ctx, "unix", name)
	}
	if conn == nil {
		conn, err = d.DialContext(ctx, "tcp", serviceAddr)
	}
	if err != nil {
		return nil, fmt.Errorf("qsm: dial service %s: %w (is 'liveobjects qsm service' running there?)", serviceAddr, err)
	}
	tuneUplink(conn)
	e := encoder{}
	e.b = append(e.b, cliMagic...)
	e.u8(ProtocolVersionMin)
	e.u8(ProtocolVersionMax)
	e.str("pid " + strconv.Itoa(os.Getpid()))
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	if _, err := conn.Write(appendFrame(nil, cliHello, e.b)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qsm: hello to service %s: %w", serviceAddr, err)
	}
	fr := newFrameReader(conn, maxFrame)
	t, body, err := fr.next()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qsm: welcome from service %s: %w", serviceAddr, err)
	}
	d2 := decoder{b: body}
	switch t {
	case cliWelcome:
	case cliError:
		d2.u32()
		d2.u32()
		code := d2.u16()
		conn.Close()
		return nil, fmt.Errorf("qsm: service %s refused: %w", serviceAddr, codeError(code, d2.str()))
	default:
		conn.Close()
		return nil, fmt.Errorf("%w: service %s sent frame type %d before welcome", ErrMalformed, serviceAddr, t)
	}
	ver := d2.u8()
	node, nodeName, maxEvent, credits := d2.u64(), d2.str(), int(d2.u32()), int(d2.u32())
	if err := d2.done(); err != nil || ver < ProtocolVersionMin || credits < 1 {
		conn.Close()
		return nil, fmt.Errorf("%w: bad welcome from service %s", ErrMalformed, serviceAddr)
	}
	conn.SetDeadline(time.Time{})
	c := newClient(conn, node, nodeName, maxEvent, credits, min(ver, ProtocolVersionMax))
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.readLoop(fr)
	}()
	return c, nil
}

// newClient returns a client on conn, a link to the service that welcomed
// it as node (named nodeName), with its dispatch workers and its writer
// running. The caller starts what reads the service's frames.
func newClient(conn net.Conn, node uint64, nodeName string, maxEvent, credits int, version uint8) *Client {
	c := &Client{
		conn:     conn,
		w:        newConnWriter(conn),
		node:     node,
		nodeName: nodeName,
		maxEvent: maxEvent,
		credits:  credits,
		quit:     make(chan struct{}),
		ended:    make(chan struct{}),
		members:  map[uint32]*Member{},
		joins:    map[uint32]chan error{},
		replies:  map[uint32]chan []byte{},
		version:  version,
		sem:      make(chan struct{}, credits),
	}
	for i := 0; i < dispatchWorkers; i++ {
		w := newWorker(maxQueue)
		c.workers = append(c.workers, w)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			w.run()
		}()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.w.loop(c.quit)
	}()
	return c
}

// Name returns "qsm".
func (c *Client) Name() string { return "qsm" }

// Provides returns Reliable|FIFO|Membership.
func (c *Client) Provides() transport.Guarantee {
	return transport.Reliable | transport.FIFO | transport.Membership
}

// NodeID returns the id of the service's node.
func (c *Client) NodeID() uint64 { return c.node }

// NodeName returns the name of the service's node.
func (c *Client) NodeName() string { return c.nodeName }

// MaxEvent returns the largest event the service accepts.
func (c *Client) MaxEvent() int { return c.maxEvent }

// Join joins channel and starts delivering its events to h, one at a time,
// in FIFO order per sender. It returns once every node has installed a view
// in which this node is in the channel, so that every event published
// anywhere after Join returns reaches h (events published a little earlier
// may reach it too).
func (c *Client) Join(ctx context.Context, channel string, h transport.Handler) (transport.Member, error) {
	m, err := c.JoinMember(ctx, channel, h)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// JoinMember is Join returning the concrete *Member (for View,
// PublishAsync and Flush).
func (c *Client) JoinMember(ctx context.Context, channel string, h transport.Handler) (*Member, error) {
	if channel == "" || len(channel) > maxString {
		return nil, fmt.Errorf("qsm: join %q: %w: channel name must be 1-%d bytes", channel, ErrMalformed, maxString)
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, fmt.Errorf("qsm: join %s: %w", channel, err)
	}
	c.nextID++
	id := c.nextID
	m := &Member{
		c: c, id: id, channel: channel, h: h,
		credits: c.sem,
		done:    make(chan struct{}),
	}
	_, m.borrows = h.(transport.Borrower)
	ch := make(chan error, 1)
	c.members[id] = m
	c.byID.store(id, m)
	c.joins[id] = ch
	c.mu.Unlock()
	body := encoder{}
	body.u32(id)
	body.u32(id)
	body.str(channel)
	fail := func(err error) (*Member, error) {
		c.mu.Lock()
		delete(c.members, id)
		c.byID.store(id, nil)
		delete(c.joins, id)
		c.mu.Unlock()
		m.stop(err)
		c.w.frame(func(b []byte) []byte {
			e := encoder{b: b}
			e.u32(5)
			e.u8(cliLeave)
			e.u32(id)
			return e.b
		})
		return nil, fmt.Errorf("qsm: join %s: %w", channel, err)
	}
	if err := c.w.frame(func(b []byte) []byte { return appendFrame(b, cliJoin, body.b) }); err != nil {
		return fail(err)
	}
	select {
	case err := <-ch:
		if err != nil {
			return fail(err)
		}
	case <-ctx.Done():
		err := ctx.Err()
		if why := c.joinStalled(); why != "" {
			err = fmt.Errorf("%w: %s", err, why)
		}
		return fail(err)
	}
	return m, nil
}

// joinStalled says why a join may not have been answered: the service has
// no link to its coordinator, which admits nodes to groups. It asks the
// service, for at most a second; "" when the service does not say so.
func (c *Client) joinStalled() string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := c.ServiceStats(ctx)
	if err != nil || st.Coordinator == "" || st.Coordinator == "up" {
		return ""
	}
	return "the local QSM service has no link to its coordinator (" + st.Coordinator + "); start the coordinator ('liveobjects qsm coordinator', or the quicksilver_coordinator service of a root) or give the service its address (gms_address)"
}

// ServiceStats asks the service for its counters.
func (c *Client) ServiceStats(ctx context.Context) (Stats, error) {
	return c.serviceStats(ctx, 0)
}

// ServiceStatsReset asks the service for its counters and then clears its
// window of repair times, so that the next reading covers what follows.
func (c *Client) ServiceStatsReset(ctx context.Context) (Stats, error) {
	return c.serviceStats(ctx, statsReset)
}

func (c *Client) serviceStats(ctx context.Context, flags uint8) (Stats, error) {
	js, err := c.request(ctx, cliStatsReq, []byte{flags})
	if err != nil {
		return Stats{}, fmt.Errorf("qsm: stats: %w", err)
	}
	var s Stats
	if err := json.Unmarshal(js, &s); err != nil {
		return Stats{}, fmt.Errorf("qsm: stats: %w", err)
	}
	return s, nil
}

// Channels lists the channels some node has joined, as the coordinator
// knows them, by name; Members counts the nodes (services) with members
// in the channel, and ID, Comment and LastSeq are empty (QSM keeps no
// channel metadata and no global sequence). It needs a service and a
// coordinator of protocol version 3 or later.
func (c *Client) Channels(ctx context.Context) ([]transport.ChannelInfo, error) {
	if c.version < listVersion {
		return nil, fmt.Errorf("qsm: channels: %w: the service speaks protocol %d; listing channels needs %d (upgrade 'liveobjects qsm service')", ErrVersion, c.version, listVersion)
	}
	r, err := c.request(ctx, cliListReq, nil)
	if err != nil {
		return nil, fmt.Errorf("qsm: channels: %w", err)
	}
	d := decoder{b: r}
	code, msg := d.u16(), d.str()
	list := decodeChannels(&d)
	if err := d.done(); err != nil {
		return nil, fmt.Errorf("qsm: channels: the service's answer: %w", err)
	}
	if code != codeOK {
		return nil, fmt.Errorf("qsm: channels: %w", codeError(code, msg))
	}
	return list, nil
}

// request sends the service a request frame of type t (a new request id,
// then body) and returns the body of its reply after the request id.
func (c *Client) request(ctx context.Context, t uint8, body []byte) ([]byte, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	req := c.nextID
	ch := make(chan []byte, 1)
	c.replies[req] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.replies, req)
		c.mu.Unlock()
	}()
	e := encoder{}
	e.u32(req)
	e.b = append(e.b, body...)
	if err := c.w.frame(func(b []byte) []byte { return appendFrame(b, t, e.b) }); err != nil {
		return nil, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			if err == nil {
				err = transport.ErrClosed
			}
			return nil, err
		}
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close leaves every channel and closes the link. It is idempotent.
func (c *Client) Close() error {
	c.closed.Do(func() {
		c.shutdown(transport.ErrClosed)
		close(c.quit)
		c.conn.Close()
		for _, w := range c.workers {
			w.stop()
		}
	})
	c.wg.Wait()
	return nil
}

// shutdown fails everything pending with err.
func (c *Client) shutdown(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	members := c.members
	c.members = map[uint32]*Member{}
	for id := range members {
		c.byID.store(id, nil)
	}
	for _, ch := range c.joins {
		ch <- err
	}
	c.joins = map[uint32]chan error{}
	for _, ch := range c.replies {
		close(ch)
	}
	c.replies = map[uint32]chan []byte{}
	c.mu.Unlock()
	for _, m := range members {
		m.stop(err)
	}
	c.endOnce.Do(func() { close(c.ended) })
}

// Done is closed once the client can no longer be used: its link to the
// service was lost, or it was closed. It implements transport.Ender.
func (c *Client) Done() <-chan struct{} { return c.ended }

// Err says why the client ended (nil while it has not).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

var _ transport.Ender = (*Client)(nil)

func (c *Client) member(id uint32) *Member { return c.byID.load(id) }

// senderString names the publishing membership source of node as
// events carry it (Event.Sender): the node id in 16 hex digits, a slash,
// the source number.
func senderString(node uint64, source uint32) string {
	const hex = "0123456789abcdef"
	var b [16 + 1 + 10]byte
	for i := 15; i >= 0; i-- {
		b[i] = hex[node&15]
		node >>= 4
	}
	b[16] = '/'
	return string(strconv.AppendUint(b[:17], uint64(source), 10))
}

// memberTable finds members by id without a lock: ids count up from 1, and
// the table is a list of chunks of memberChunk ids, grown by copying the
// list. Writers hold Client.mu. A chunk stays once made (16 KiB per 1024
// ids handed out).
type memberTable struct {
	chunks atomic.Pointer[[]*[memberChunk]memberSlot]
}

// memberSlot holds a member and, beside it, whether it borrows payloads,
// so that the receiver, which reads that for every event, does not load
// the member itself (whose lines its dispatch worker writes). An id is
// never reused: borrows is written once, before m is stored, and read
// only after a load of m that saw it.
type memberSlot struct {
	m       atomic.Pointer[Member]
	borrows bool
}

const memberChunk = 1024

func (t *memberTable) slot(id uint32) *memberSlot {
	p := t.chunks.Load()
	if p == nil || int(id/memberChunk) >= len(*p) {
		return nil
	}
	return &(*p)[id/memberChunk][id%memberChunk]
}

func (t *memberTable) load(id uint32) *Member {
	if sl := t.slot(id); sl != nil {
		return sl.m.Load()
	}
	return nil
}

// lookup returns the member id and whether it borrows payloads.
func (t *memberTable) lookup(id uint32) (*Member, bool) {
	if sl := t.slot(id); sl != nil {
		if m := sl.m.Load(); m != nil {
			return m, sl.borrows
		}
	}
	return nil, false
}

func (t *memberTable) store(id uint32, m *Member) {
	var cs []*[memberChunk]memberSlot
	if p := t.chunks.Load(); p != nil {
		cs = *p
	}
	i := int(id / memberChunk)
	if i >= len(cs) {
		if m == nil {
			return
		}
		grown := slices.Clone(cs)
		for len(grown) <= i {
			grown = append(grown, new([memberChunk]memberSlot))
		}
		t.chunks.Store(&grown)
		cs = grown
	}
	sl := &cs[i][id%memberChunk]
	if m != nil {
		sl.borrows = m.borrows
	}
	sl.m.Store(m)
}

func (c *Client) readLoop(fr *frameReader) {
	r := newReceiver(c, true)
	defer r.handOver()
	err := func() error {
		for {
			if r.npending > 0 && (fr.buffered() == 0 || r.npending >= handOverAt) {
				r.handOver()
			}
			t, body, err := fr.next()
			if err != nil {
				return err
			}
			if err := r.handle(t, body); err != nil {
				return err
			}
		}
	}()
	c.linkLost(err)
}

// linkLost ends the client after its link to the service ended with err.
func (c *Client) linkLost(err error) {
	if errors.Is(err, net.ErrClosed) {
		err = transport.ErrClosed
	}
	why := err.Error()
	if errors.Is(err, transport.ErrClosed) || errors.Is(err, io.EOF) {
		why = "the service closed it (it stopped, or was restarted)"
	}
	c.shutdown(fmt.Errorf("%w: link to the local QSM service lost: %s", transport.ErrClosed, why))
	c.w.fail(err)
}

// handOverAt is the number of events a receiver collects before it hands
// them to the dispatch workers even though more are coming.
const handOverAt = 4096

// receiver turns the service's frames into events for the dispatch
// workers and answers for the waiting calls. A socket link's readLoop
// drives one; an attached client's link drives one from the service's
// goroutines, one at a time.
type receiver struct {
	c    *Client
	wait bool // handOver waits while a worker's queue is full

	// Sender names ("node/source"), made once: per node in a slice by
	// source number (below 1<<16), others in a map.
	names     map[uint64]*[]string
	lastNode  uint64
	cur       *[]string
	senders   map[[2]uint64]string
	nodeNames map[string]string
	lastView  GroupView // the last view handed to a member
	scratch   []string

	// Events are handed to the workers in batches: once per read from
	// the link, not once per event.
	pending  [][]item
	npending int
	// Payloads are copied into shared blocks: one allocation for many
	// events instead of one each. Borrowers' copies come from blocks
	// that are reused once their handlers have returned.
	payloads payload.Blocks
	lent     payload.Recycler
}

func newReceiver(c *Client, wait bool) *receiver {
	return &receiver{
		c: c, wait: wait,
		names:     map[uint64]*[]string{},
		senders:   map[[2]uint64]string{},
		nodeNames: map[string]string{},
		pending:   make([][]item, len(c.workers)),
	}
}

func (r *receiver) senderName(node uint64, source uint32) string {
	if r.cur == nil || node != r.lastNode {
		r.cur, r.lastNode = r.names[node], node
		if r.cur == nil {
			r.cur = new([]string)
			if len(r.names) < 4096 {
				r.names[node] = r.cur
			}
		}
	}
	cur := r.cur
	if source < 1<<16 {
		if int(source) < len(*cur) {
			if name := (*cur)[source]; name != "" {
				return name
			}
		} else {
			*cur = slices.Grow(*cur, int(source)+1-len(*cur))[:source+1]
		}
		name := senderString(node, source)
		(*cur)[source] = name
		return name
	}
	key := [2]uint64{node, uint64(source)}
	name, ok := r.senders[key]
	if !ok {
		name = senderString(node, source)
		if len(r.senders) < 1<<16 {
			r.senders[key] = name
		}
	}
	return name
}

// handOver gives the collected events to the workers.
func (r *receiver) handOver() {
	for i, p := range r.pending {
		if len(p) > 0 {
			r.c.workers[i].pushAll(p, r.wait)
			r.pending[i] = p[:0]
		}
	}
	r.npending = 0
}

// deliver collects an event of member id for its worker.
//
// blk, when not nil, is the block data was cut from, which stays unchanged
// while the block is retained: a member that borrows gets data itself and
// a reference to blk, released once its handler has returned. When blk is
// nil (data is in a buffer the caller reuses), a borrower gets a copy cut
// from a recycled block, released the same way. Every other member gets a
// copy of its own.
func (r *receiver) deliver(id uint32, node uint64, source uint32, seq uint64, data []byte, blk *payload.Block) {
	// The member itself is not read here: its worker, on another thread,
	// writes its line (callMu) for every handler call, and loading it
	// here for every event made that line cross between the cores (and,
	// with many groups, costs a cache miss per event). The worker checks
	// stopped before it calls the handler.
	if m, borrows := r.c.byID.lookup(id); m != nil {
		wi := int(id) % len(r.c.workers)
		switch {
		case !borrows:
			data, blk = r.payloads.Copy(data), nil
		case blk != nil:
			blk.Retain()
		default:
			data, blk = r.lent.Copy(data)
		}
		r.pending[wi] = append(r.pending[wi], item{m, transport.Event{Seq: seq, Sender: r.senderName(node, source), Data: data}, blk})
		r.npending++
	}
}

// handle acts on one frame from the service; an error ends the link.
func (r *receiver) handle(t uint8, body []byte) error {
	c := r.c
	switch t {
	case cliDeliver:
		if len(body) < 24 {
			return fmt.Errorf("%w: short deliver frame", ErrMalformed)
		}
		r.deliver(binary.BigEndian.Uint32(body), binary.BigEndian.Uint64(body[4:]),
			binary.BigEndian.Uint32(body[12:]), binary.BigEndian.Uint64(body[16:]), body[24:], nil)
	case cliPubAck:
		d := decoder{b: body}
		id, seq := d.u32(), d.u64()
		if err := d.done(); err != nil {
			return err
		}
		if m := c.member(id); m != nil {
			m.acked(seq, nil)
		}
	case cliJoined:
		d := decoder{b: body}
		req, _ := d.u32(), d.u32()
		if err := d.done(); err != nil {
			return err
		}
		c.mu.Lock()
		if ch := c.joins[req]; ch != nil {
			ch <- nil
			delete(c.joins, req)
		}
		c.mu.Unlock()
	case cliError:
		d := decoder{b: body}
		req, id, code, msg := d.u32(), d.u32(), d.u16(), d.str()
		if err := d.done(); err != nil {
			return err
		}
		e := codeError(code, msg)
		c.mu.Lock()
		ch := c.joins[req]
		delete(c.joins, req)
		c.mu.Unlock()
		switch {
		case ch != nil:
			ch <- e
		case id != 0:
			if m := c.member(id); m != nil {
				m.acked(0, e)
			}
		default:
			return fmt.Errorf("qsm: service closed the link: %w", e)
		}
	case cliView:
		d := decoder{b: body}
		id := d.u32()
		v := GroupView{Number: d.u64()}
		n := d.count(2)
		r.scratch = r.scratch[:0]
		for i := 0; i < n && d.err == nil; i++ {
			// Every member's view names the same few nodes: share their
			// strings.
			b := d.strBytes()
			name, ok := r.nodeNames[string(b)]
			if !ok {
				name = string(b)
				if len(r.nodeNames) < 4096 {
					r.nodeNames[name] = name
				}
			}
			r.scratch = append(r.scratch, name)
		}
		if err := d.done(); err != nil {
			return err
		}
		// The groups of a region get the same view: they share one list
		// of members (nobody modifies it).
		if r.lastView.Members == nil || v.Number != r.lastView.Number || !slices.Equal(r.scratch, r.lastView.Members) {
			r.lastView = GroupView{Number: v.Number, Members: slices.Clone(r.scratch)}
			if r.lastView.Members == nil {
				r.lastView.Members = []string{}
			}
		}
		v.Members = r.lastView.Members
		if m := c.member(id); m != nil {
			m.setView(v)
		}
	case cliStats, cliList:
		if len(body) < 4 {
			return fmt.Errorf("%w: short reply frame (type %d)", ErrMalformed, t)
		}
		req := binary.BigEndian.Uint32(body)
		c.mu.Lock()
		if ch := c.replies[req]; ch != nil {
			ch <- append([]byte(nil), body[4:]...)
			delete(c.replies, req)
		}
		c.mu.Unlock()
	default:
		return fmt.Errorf("%w: service frame type %d", ErrMalformed, t)
	}
	return nil
}

// GroupView is a numbered membership view of one channel: the names of
// the nodes whose services have members in it.
type GroupView struct {
	// Number is the coordinator's view number.
	Number uint64
	// Members are node names, ordered by node id.
	Members []string
}

// Member is a process's membership in one QSM channel.
type Member struct {
	// What every delivery reads comes first, in one cache line, which
	// only the member's dispatch worker touches per event.
	h       transport.Handler
	callMu  sync.Mutex  // held while h is called; Leave takes it to wait for a call in progress
	stopped atomic.Bool // no handler call starts once set
	id      uint32
	c       *Client
	channel string
	credits chan struct{} // the client's publish tokens (Client.sem)
	done    chan struct{} // closed by stop

	ackMu   sync.Mutex // protects acks and asyncEr; held while a publish frame is queued
	acks    ackQueue
	asyncEr error
	idle    chan struct{} // closed when acks empties, if Flush waits

	mu   sync.Mutex // protects err and view
	err  error
	view GroupView
	left sync.Once

	// borrows is set when h is a transport.Borrower: it is lent payloads
	// (see receiver.deliver) instead of given copies. The receiver reads
	// the copy in the client's member table.
	borrows bool
}

var _ transport.Member = (*Member)(nil)

type pubResult struct {
	seq uint64
	err error
}

// Channel returns the channel's name.
func (m *Member) Channel() string { return m.channel }

// View returns the channel's current membership view.
func (m *Member) View() GroupView {
	m.mu.Lock()
	defer m.mu.Unlock()
	// The members' list is shared with the views of other channels:
	// callers get their own copy.
	return GroupView{Number: m.view.Number, Members: slices.Clone(m.view.Members)}
}

func (m *Member) setView(v GroupView) {
	m.mu.Lock()
	m.view = v
	m.mu.Unlock()
}

// Publish sends data as one event and returns its sequence number (per
// sender) once the local service has it in its order and has multicast it.
func (m *Member) Publish(ctx context.Context, data []byte) (uint64, error) {
	ch := make(chan pubResult, 1)
	if err := m.send(ctx, data, ch); err != nil {
		return 0, err
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return 0, fmt.Errorf("qsm: publish to %s: %w", m.channel, r.err)
		}
		return r.seq, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// PublishAsync queues data as one event without waiting for the service;
// it blocks only while ClientCredits events are in flight. Errors show up
// in a later call or in Flush.
func (m *Member) PublishAsync(ctx context.Context, data []byte) error {
	m.ackMu.Lock()
	err := m.asyncEr
	m.ackMu.Unlock()
	if err != nil {
		return fmt.Errorf("qsm: publish to %s: %w", m.channel, err)
	}
	return m.send(ctx, data, nil)
}

// Flush waits until the service has accepted every event this member
// published so far.
func (m *Member) Flush(ctx context.Context) error {
	for {
		m.ackMu.Lock()
		if m.acks.len() == 0 {
			err := m.asyncEr
			m.ackMu.Unlock()
			if err != nil {
				return fmt.Errorf("qsm: flush %s: %w", m.channel, err)
			}
			return nil
		}
		if m.idle == nil {
			m.idle = make(chan struct{})
		}
		idle := m.idle
		m.ackMu.Unlock()
		select {
		case <-idle:
		case <-m.done:
			return fmt.Errorf("qsm: flush %s: %w", m.channel, m.stopErr())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (m *Member) stopErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	return transport.ErrClosed
}

func (m *Member) send(ctx context.Context, data []byte, ch chan pubResult) error {
	if len(data) > m.c.maxEvent {
		return fmt.Errorf("qsm: publish to %s: %w: %d bytes (max %d)", m.channel, transport.ErrTooLarge, len(data), m.c.maxEvent)
	}
	if m.stopped.Load() {
		return fmt.Errorf("qsm: publish to %s: %w", m.channel, m.stopErr())
	}
	// A free token is taken with a send that locks the tokens' channel
	// alone; a select also locks the member's done channel (and, with
	// publishes round-robin over thousands of members, misses the cache
	// for it). BenchmarkPublish: about 100 ns less per publish, for one
	// group as for many.
	select {
	case m.credits <- struct{}{}:
	default:
		select {
		case m.credits <- struct{}{}:
		case <-m.done:
			return fmt.Errorf("qsm: publish to %s: %w", m.channel, m.stopErr())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.ackMu.Lock()
	// stop sets stopped before it takes ackMu to fail what is in flight:
	// checked here, a publish is either refused or failed by stop.
	if m.stopped.Load() {
		m.ackMu.Unlock()
		<-m.credits
		return fmt.Errorf("qsm: publish to %s: %w", m.channel, m.stopErr())
	}
	m.acks.push(ch)
	id := m.id
	err := m.c.w.frame(func(b []byte) []byte {
		b = binary.BigEndian.AppendUint32(b, uint32(1+4+len(data)))
		b = append(b, cliPublish)
		b = binary.BigEndian.AppendUint32(b, id)
		return append(b, data...)
	})
	if err != nil {
		m.acks.dropLast()
		m.ackMu.Unlock()
		<-m.credits
		return fmt.Errorf("qsm: publish to %s: %w: %v", m.channel, transport.ErrClosed, err)
	}
	m.ackMu.Unlock()
	return nil
}

// acked completes the oldest publish in flight.
func (m *Member) acked(seq uint64, err error) {
	m.ackMu.Lock()
	if m.acks.len() == 0 {
		m.ackMu.Unlock()
		return
	}
	ch := m.acks.pop()
	if ch == nil && err != nil && m.asyncEr == nil {
		m.asyncEr = err
	}
	if m.acks.len() == 0 && m.idle != nil {
		close(m.idle)
		m.idle = nil
	}
	m.ackMu.Unlock()
	if ch != nil {
		ch <- pubResult{seq, err}
	}
	select {
	case <-m.credits:
	default:
	}
}

// ackQueue holds the answer channels of a member's publishes in flight,
// oldest first (nil for PublishAsync). Its array is reused: a member of
// one of thousands of groups has a publish or two in flight at a time,
// and taking them off the front of a slice made each publish allocate.
type ackQueue struct {
	q    []chan pubResult // q[head:] in flight
	head int
}

func (a *ackQueue) len() int { return len(a.q) - a.head }

func (a *ackQueue) push(ch chan pubResult) { a.q = append(a.q, ch) }

// dropLast takes back the last push.
func (a *ackQueue) dropLast() { a.q = a.q[:len(a.q)-1] }

// pop removes and returns the oldest; the queue is not empty.
func (a *ackQueue) pop() chan pubResult {
	ch := a.q[a.head]
	a.q[a.head] = nil
	a.head++
	switch {
	case a.head == len(a.q):
		a.q, a.head = a.q[:0], 0
	case a.head >= 1024 && 2*a.head >= len(a.q):
		n := copy(a.q, a.q[a.head:])
		clear(a.q[n:])
		a.q, a.head = a.q[:n], 0
	}
	return ch
}

// takeAll empties the queue, returning what it held, oldest first.
func (a *ackQueue) takeAll() []chan pubResult {
	all := a.q[a.head:]
	*a = ackQueue{}
	return all
}

// deliver calls the handler unless the member has stopped.
func (m *Member) deliver(ev transport.Event) {
	m.callMu.Lock()
	if !m.stopped.Load() {
		m.h.Deliver(ev)
	}
	m.callMu.Unlock()
}

// stop ends the member: pending publishes fail with err and no handler
// call starts afterwards.
func (m *Member) stop(err error) {
	if m.stopped.Swap(true) {
		return
	}
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
	close(m.done)
	m.ackMu.Lock()
	acks := m.acks.takeAll()
	if m.idle != nil {
		close(m.idle)
		m.idle = nil
	}
	m.ackMu.Unlock()
	for _, ch := range acks {
		if ch != nil {
			ch <- pubResult{0, err}
		}
		// Give back the shared publish token.
		select {
		case <-m.credits:
		default:
		}
	}
}

// item is an event for one member. A borrowed event's Data is cut from
// blk, which the item holds a reference to until the handler has had it.
type item struct {
	m   *Member
	ev  transport.Event
	blk *payload.Block
}

// releaseItems gives up the blocks that items hold.
func releaseItems(items []item) {
	for i := range items {
		if items[i].blk != nil {
			items[i].blk.Release()
			items[i].blk = nil
		}
	}
}

// worker calls the handlers of the members assigned to it, one event at a
// time, in arrival order.
type worker struct {
	mu      sync.Mutex // protects q and stopped
	cond    *sync.Cond
	max     int // queue length above which pushAll waits
	q       []item
	stopped bool

	bytes atomic.Int64 // payload bytes queued or being delivered
}

func newWorker(max int) *worker {
	w := &worker{max: max}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// pushAll queues events in order; with wait, it first waits while the
// queue is full (a link that cannot wait bounds the queue by its bytes).
func (w *worker) pushAll(items []item, wait bool) {
	n := 0
	for i := range items {
		n += len(items[i].ev.Data)
	}
	w.mu.Lock()
	for wait && len(w.q) >= w.max && !w.stopped {
		w.cond.Wait()
	}
	if !w.stopped {
		w.q = append(w.q, items...)
		w.bytes.Add(int64(n))
		w.cond.Broadcast()
	} else {
		releaseItems(items)
	}
	w.mu.Unlock()
	clear(items)
}

func (w *worker) stop() {
	w.mu.Lock()
	w.stopped = true
	releaseItems(w.q)
	w.q = nil
	w.bytes.Store(0)
	w.cond.Broadcast()
	w.mu.Unlock()
}

func (w *worker) run() {
	var batch []item
	var evs []transport.Event
	for {
		w.mu.Lock()
		for len(w.q) == 0 && !w.stopped {
			w.cond.Wait()
		}
		if w.stopped {
			w.mu.Unlock()
			return
		}
		batch, w.q = w.q, batch[:0]
		w.cond.Broadcast()
		w.mu.Unlock()
		for i := 0; i < len(batch); {
			m := batch[i].m
			j := i + 1
			n := len(batch[i].ev.Data)
			for j < len(batch) && batch[j].m == m && j-i < maxRun {
				n += len(batch[j].ev.Data)
				j++
			}
			evs = m.deliverRun(batch[i:j], evs)
			releaseItems(batch[i:j])
			clear(batch[i:j])
			w.bytes.Add(-int64(n))
			i = j
		}
	}
}

// maxRun bounds the events of one DeliverBatch call.
const maxRun = 256

// deliverRun hands one member's consecutive events to its handler: in one
// call when the handler takes batches. evs is scratch space, returned for
// reuse.
func (m *Member) deliverRun(run []item, evs []transport.Event) []transport.Event {
	bh, ok := m.h.(transport.BatchHandler)
	if !ok || len(run) == 1 {
		for i := range run {
			m.deliver(run[i].ev)
		}
		return evs
	}
	evs = evs[:0]
	for i := range run {
		evs = append(evs, run[i].ev)
	}
	m.callMu.Lock()
	if !m.stopped.Load() {
		bh.DeliverBatch(evs)
	}
	m.callMu.Unlock()
	clear(evs)
	return evs[:0]
}

// Done is closed once the membership has ended: by Leave, or because the
// client lost its link to the service. It implements transport.Ender.
func (m *Member) Done() <-chan struct{} { return m.done }

// Err says why the membership ended (nil while it has not).
func (m *Member) Err() error {
	if !m.stopped.Load() {
		return nil
	}
	return m.stopErr()
}

var _ transport.Ender = (*Member)(nil)

// Leave ends the membership; no handler call starts after it returns. It
// is idempotent. It must not be called from the member's own Handler.
func (m *Member) Leave() error {
	m.left.Do(func() {
		m.c.mu.Lock()
		_, mine := m.c.members[m.id]
		delete(m.c.members, m.id)
		if mine {
			m.c.byID.store(m.id, nil)
		}
		m.c.mu.Unlock()
		m.stop(transport.ErrClosed)
		if mine {
			id := m.id
			m.c.w.frame(func(b []byte) []byte {
				e := encoder{b: b}
				e.u32(5)
				e.u8(cliLeave)
				e.u32(id)
				return e.b
			})
		}
	})
	// Wait for a handler call in progress.
	m.callMu.Lock()
	m.callMu.Unlock()
	return nil
}
