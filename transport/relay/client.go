package relay

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/internal/payload"
)

// ClientConfig configures a relay client.
type ClientConfig struct {
	// Addr is the relay's TCP address ("127.0.0.1:60000").
	Addr string
	// TLS, when set, makes the client speak TLS (RootCAs for the relay's
	// certificate, Certificates for a client certificate).
	TLS *tls.Config
	// Secret is the relay's shared secret, when it has one.
	Secret string
	// Tokens maps channel names to their tokens.
	Tokens map[string]string
	// Name identifies this process in events' Sender (default host:pid).
	Name string
	// Logger receives the client's logs (default slog.Default()).
	Logger *slog.Logger
	// MemberQueue bounds the events queued for one member's Handler; past
	// it the member is caught up by state transfer (default 65536).
	MemberQueue int
	// MaxInFlight bounds publishes awaiting the relay's acknowledgement
	// (default and maximum 4096); further publishes wait.
	MaxInFlight int
	// MaxBackoff bounds the delay between reconnection attempts (default 5s).
	MaxBackoff time.Duration
	// Heartbeat is how long the connection may be quiet before the client
	// pings the relay (default 5s; negative: never). A relay that stays
	// silent for three heartbeats is taken for gone, as a relay whose host
	// vanished or whose network was cut sends no error: the client closes
	// the connection and reconnects.
	Heartbeat time.Duration
}

// ChangeKind says what happened to a channel.
type ChangeKind int

// Kinds of ChannelChange.
const (
	// ChannelAdded: a channel was created.
	ChannelAdded ChangeKind = 1
	// ChannelRemoved: a channel was removed.
	ChannelRemoved ChangeKind = 2
)

// ChannelChange is a notification that a channel was added or removed.
type ChannelChange struct {
	Kind ChangeKind
	Info transport.ChannelInfo
}

// Client is the per-process relay client: one TCP connection carries every
// channel the process joins. It reconnects by itself with bounded
// exponential backoff, resumes every joined channel from its last received
// event and retries unacknowledged publishes, which the relay applies at
// most once. Client implements transport.Driver and transport.Lister.
type Client struct {
	cfg ClientConfig
	log *slog.Logger
	id  string

	mu       sync.Mutex // protects the fields below
	cc       *cconn     // current connection; nil while disconnected
	up       chan struct{}
	epoch    uint64
	members  map[string]*Member
	pubs     pubQueue // pending publishes
	reqs     map[uint64]chan callResult
	next     uint64
	watchers map[int]chan ChannelChange
	watchSeq int
	closed   bool
	inflight int           // publishes not yet acknowledged (at most cfg.MaxInFlight)
	slotFree chan struct{} // made by a publisher waiting for a slot, closed when one frees
	slab     *pubSlab      // publish frames are carved from it (see carve)
	slabs    []*pubSlab    // blocks whose frames were all acknowledged, for reuse
	freePubs []*pub        // completed publish records, for reuse

	snap     atomic.Pointer[map[string]*Member] // members, for the reader
	maxEvent atomic.Int64                       // the relay's event size limit

	quit chan struct{}
	wg   sync.WaitGroup
}

type pub struct {
	counter uint64
	m       *Member
	frame   []byte
	slab    *pubSlab // the block frame was carved from, or nil
	sent    bool
	done    func(seq uint64, err error)
}

type callResult struct {
	typ  byte
	body []byte
	err  error
}

var (
	_ transport.Driver = (*Client)(nil)
	_ transport.Lister = (*Client)(nil)
	_ transport.Member = (*Member)(nil)
	_ transport.Ender  = (*Member)(nil)
)

// Dial connects to the relay and returns a client. The first connection
// must succeed (so a wrong address or secret is reported at once); later
// losses are repaired in the background.
func Dial(ctx context.Context, cfg ClientConfig) (*Client, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		h, _ := os.Hostname()
		cfg.Name = fmt.Sprintf("%s:%d", h, os.Getpid())
	}
	if cfg.MemberQueue <= 0 {
		cfg.MemberQueue = 65536
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4096
	}
	if cfg.MaxInFlight >= dedupRing {
		cfg.MaxInFlight = dedupRing / 2
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	var idb [12]byte
	_, _ = rand.Read(idb[:])
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "relay-client"),
		id:       hex.EncodeToString(idb[:]),
		up:       make(chan struct{}),
		members:  map[string]*Member{},
		reqs:     map[uint64]chan callResult{},
		watchers: map[int]chan ChannelChange{},
		quit:     make(chan struct{}),
	}
	c.snap.Store(&map[string]*Member{})
	cc, err := c.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("relay: dial %s: %w", cfg.Addr, err)
	}
	c.mu.Lock()
	c.install(cc)
	c.mu.Unlock()
	c.wg.Add(1)
	go c.supervise()
	return c, nil
}

// Name returns "relay".
func (c *Client) Name() string { return "relay" }

// Provides returns reliable, FIFO, total order and state transfer.
func (c *Client) Provides() transport.Guarantee {
	return transport.Reliable | transport.FIFO | transport.TotalOrder | transport.StateTransfer
}

// ID is the client's identity at the relay (random per Dial).
func (c *Client) ID() string { return c.id }

// MaxEvent is the largest event payload, in bytes, that the relay accepts:
// the limit it announced in the handshake of the current connection (of
// the last one while disconnected). Publish refuses larger events.
func (c *Client) MaxEvent() int { return int(c.maxEvent.Load()) }

// Epoch identifies the history of the relay the client is connected to
// (the last one while disconnected), as the relay announced it in its
// handshake. It changes when the relay lost its history, as a relay
// without a durable log does when it restarts: every joined channel then
// starts again from the relay's current state (Handler.Restore), with
// sequence numbers that start again, and publishes not yet acknowledged
// are sent to the new history. A Handler's Restore sees the epoch of the
// connection its state came from, or a later one.
func (c *Client) Epoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// Connected reports whether the client has a connection right now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cc != nil
}

// connect dials and does the handshake.
func (c *Client) connect(ctx context.Context) (*cconn, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", c.cfg.Addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if c.cfg.TLS != nil {
		cfg := c.cfg.TLS.Clone()
		if cfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(c.cfg.Addr); err == nil {
				cfg.ServerName = host
			}
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		nc = tc
	}
	if dl, ok := dctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	// The handshake ends as soon as ctx does, not only at the deadline: a
	// relay that accepts the connection but never answers must not hold up
	// a caller that gave up.
	stopAbort := context.AfterFunc(dctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stopAbort()
	handshakeErr := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("handshake: %w", ctx.Err())
		}
		return err
	}
	b, off := beginFrame(nil, tHello)
	b = append(b, magic[:]...)
	b = putU16(b, ProtocolVersionMin)
	b = putU16(b, ProtocolVersionMax)
	b = putStr(b, c.id)
	b = putStr(b, c.cfg.Name)
	b = putStr(b, c.cfg.Secret)
	b = endFrame(b, off)
	if _, err := nc.Write(b); err != nil {
		nc.Close()
		return nil, handshakeErr(err)
	}
	typ, body, err := readFrame(nc, helloMax)
	if err != nil {
		nc.Close()
		return nil, handshakeErr(fmt.Errorf("handshake: %w", err))
	}
	d2 := dec{b: body}
	switch typ {
	case tWelcome:
	case tError:
		d2.u64()
		code, msg := Code(d2.u16()), d2.str()
		nc.Close()
		return nil, &Error{Code: code, Msg: msg}
	default:
		nc.Close()
		return nil, errf(CodeProtocol, "expected welcome, got %s frame", frameName(typ))
	}
	version, epoch, maxEvent, maxFrame := d2.u16(), d2.u64(), d2.u32(), d2.u32()
	if err := d2.end(); err != nil || version < ProtocolVersionMin || version > ProtocolVersionMax {
		nc.Close()
		return nil, errf(CodeProtocol, "bad welcome (version %d)", version)
	}
	if !stopAbort() {
		// ctx ended as the welcome came: the deadline is already past.
		nc.Close()
		return nil, handshakeErr(fmt.Errorf("handshake: %w", context.DeadlineExceeded))
	}
	nc.SetDeadline(time.Time{})
	cc := &cconn{
		cl:       c,
		nc:       nc,
		epoch:    epoch,
		maxEvent: int(maxEvent),
		parser:   NewParser(int(maxFrame)),
		wake:     make(chan struct{}, 1),
		dead:     make(chan struct{}),
	}
	return cc, nil
}

// readFrame reads exactly one frame (handshake only).
func readFrame(r io.Reader, limit int) (byte, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return 0, nil, errf(CodeProtocol, "empty frame")
	}
	if n > uint32(limit) {
		return 0, nil, errf(CodeTooLarge, "handshake frame of %d bytes exceeds the limit of %d", n, limit)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	return buf[0], buf[1:], nil
}

// install makes cc the current connection: joins are resumed, unacknowledged
// publishes resent, in that order. It returns the epoch of the previous
// connection (0 for the first). c.mu must be held.
func (c *Client) install(cc *cconn) (oldEpoch uint64) {
	oldEpoch = c.epoch
	c.cc = cc
	c.epoch = cc.epoch
	c.maxEvent.Store(int64(cc.maxEvent))
	for _, m := range c.members {
		c.next++
		m.joinReq = c.next
		cc.enqueue(m.joinFrame(c.next, oldEpoch))
	}
	c.pubs.each(func(p *pub) {
		p.sent = true
		cc.enqueue(p.frame)
	})
	close(c.up)
	cc.heard.Store(time.Now().UnixNano())
	c.wg.Add(2)
	go cc.writeLoop()
	go cc.readLoop()
	if c.cfg.Heartbeat > 0 {
		c.wg.Add(1)
		go cc.heartbeat(c.cfg.Heartbeat)
	}
	return oldEpoch
}

// silentBeats is how many heartbeats of silence make the relay gone.
const silentBeats = 3

// heartbeat pings the relay when the connection was quiet for a beat and
// closes it when the relay stayed silent for silentBeats beats. It ends
// with the connection.
func (cc *cconn) heartbeat(beat time.Duration) {
	defer cc.cl.wg.Done()
	t := time.NewTicker(beat / 2)
	defer t.Stop()
	var token uint64
	for {
		select {
		case <-t.C:
		case <-cc.dead:
			return
		}
		quiet := time.Since(time.Unix(0, cc.heard.Load()))
		switch {
		case quiet >= silentBeats*beat:
			cc.cl.log.Warn("relay: the relay is silent; reconnecting", "addr", cc.cl.cfg.Addr, "silent", quiet.Round(time.Millisecond))
			cc.close(fmt.Errorf("%w: nothing heard from the relay for %v", ErrSilent, quiet.Round(time.Millisecond)))
			return
		case quiet >= beat:
			token++
			tok := token
			cc.enqueueFn(tPing, func(b []byte) []byte { return putU64(b, tok) })
		}
	}
}

// supervise waits for the connection to die and reconnects.
func (c *Client) supervise() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		cc := c.cc
		c.mu.Unlock()
		select {
		case <-cc.dead:
		case <-c.quit:
			return
		}
		c.mu.Lock()
		c.cc = nil
		c.up = make(chan struct{})
		for id, ch := range c.reqs {
			ch <- callResult{err: ErrDisconnected}
			delete(c.reqs, id)
		}
		for _, m := range c.members {
			m.resetStateAsm()
		}
		c.mu.Unlock()
		c.log.Warn("relay: connection lost; reconnecting", "addr", c.cfg.Addr, "err", cc.err())
		delay := 50 * time.Millisecond
		for {
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-c.quit:
					cancel()
				case <-ctx.Done():
				}
			}()
			ncc, err := c.connect(ctx)
			cancel()
			if err == nil {
				c.mu.Lock()
				if c.closed {
					c.mu.Unlock()
					ncc.nc.Close()
					return
				}
				oldEpoch := c.install(ncc)
				channels, unacked := len(c.members), c.pubs.Len()
				c.mu.Unlock()
				if oldEpoch != ncc.epoch {
					// The joins just sent carry the old epoch: the relay
					// does not resume them but transfers its current state.
					c.log.Warn("relay: reconnected to a relay that lost its history (its epoch changed, as when a relay without a durable log restarts): every joined channel starts again from the relay's current state, sequence numbers start again, and unacknowledged publishes are sent to the new history; events the old relay held are gone",
						"addr", c.cfg.Addr, "old_epoch", oldEpoch, "epoch", ncc.epoch, "channels", channels, "unacknowledged", unacked)
				} else {
					c.log.Info("relay: reconnected", "addr", c.cfg.Addr)
				}
				break
			}
			var re *Error
			if errors.As(err, &re) && re.Code == CodeDenied {
				c.log.Error("relay: reconnect denied", "err", err)
			} else {
				c.log.Debug("relay: reconnect failed", "err", err, "retry_in", delay)
			}
			jitter := time.Duration(mrand.Int64N(int64(delay)/2 + 1))
			select {
			case <-time.After(delay + jitter):
			case <-c.quit:
				return
			}
			delay = min(delay*2, c.cfg.MaxBackoff)
		}
	}
}

// Close leaves every channel and closes the connection. Idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.quit)
	cc := c.cc
	members := make([]*Member, 0, len(c.members))
	for _, m := range c.members {
		members = append(members, m)
	}
	pubs := c.pubs.removeIf(func(*pub) bool { return true })
	for id, ch := range c.reqs {
		ch <- callResult{err: transport.ErrClosed}
		delete(c.reqs, id)
	}
	for id, w := range c.watchers {
		close(w)
		delete(c.watchers, id)
	}
	c.mu.Unlock()
	for _, p := range pubs {
		p.done(0, transport.ErrClosed)
	}
	for _, m := range members {
		m.stop(transport.ErrClosed)
	}
	if cc != nil {
		cc.close(nil)
	}
	c.wg.Wait()
	for _, m := range members {
		m.wait()
	}
	return nil
}

// waitUp waits until connected; it returns the connection.
func (c *Client) waitUp(ctx context.Context) (*cconn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, transport.ErrClosed
		}
		cc, up := c.cc, c.up
		c.mu.Unlock()
		if cc != nil {
			return cc, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrDisconnected, ctx.Err())
		case <-c.quit:
			return nil, transport.ErrClosed
		}
	}
}

// call sends a request and waits for its answer, retrying across
// reconnections.
func (c *Client) call(ctx context.Context, build func(b []byte, reqID uint64) []byte, typ byte) (callResult, error) {
	for {
		if _, err := c.waitUp(ctx); err != nil {
			return callResult{}, err
		}
		ch := make(chan callResult, 1)
		c.mu.Lock()
		cc := c.cc
		if cc == nil || c.closed {
			c.mu.Unlock()
			continue
		}
		c.next++
		id := c.next
		c.reqs[id] = ch
		b, off := beginFrame(nil, typ)
		cc.enqueue(endFrame(build(b, id), off))
		c.mu.Unlock()
		select {
		case r := <-ch:
			if errors.Is(r.err, ErrDisconnected) {
				continue
			}
			if r.err != nil {
				return r, r.err
			}
			return r, nil
		case <-ctx.Done():
			c.mu.Lock()
			delete(c.reqs, id)
			c.mu.Unlock()
			return callResult{}, ctx.Err()
		}
	}
}

// Channels lists the relay's channels.
func (c *Client) Channels(ctx context.Context) ([]transport.ChannelInfo, error) {
	r, err := c.call(ctx, func(b []byte, id uint64) []byte { return putU64(b, id) }, tList)
	if err != nil {
		return nil, fmt.Errorf("relay: list channels: %w", err)
	}
	d := dec{b: r.body}
	d.u64()
	n := d.u32()
	if n > 1<<20 {
		return nil, errf(CodeProtocol, "channel list of %d entries", n)
	}
	out := make([]transport.ChannelInfo, 0, n)
	for i := uint32(0); i < n; i++ {
		out = append(out, getInfo(&d))
	}
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("relay: list channels: %w", errf(CodeProtocol, "%v", err))
	}
	return out, nil
}

// CreateChannel creates a channel at the relay.
func (c *Client) CreateChannel(ctx context.Context, info transport.ChannelInfo) error {
	_, err := c.call(ctx, func(b []byte, id uint64) []byte { return putInfo(putU64(b, id), info) }, tCreate)
	if err != nil {
		return fmt.Errorf("relay: create channel %s: %w", channelKey(info), err)
	}
	return nil
}

// RemoveChannel removes a channel at the relay, with its state and history.
func (c *Client) RemoveChannel(ctx context.Context, name string) error {
	_, err := c.call(ctx, func(b []byte, id uint64) []byte { return putStr(putU64(b, id), name) }, tRemove)
	if err != nil {
		return fmt.Errorf("relay: remove channel %s: %w", name, err)
	}
	return nil
}

// Watch returns notifications of channels added and removed, and a
// function that stops them. Notifications are dropped (and logged) when
// the receiver falls more than 1024 behind.
func (c *Client) Watch() (<-chan ChannelChange, func()) {
	ch := make(chan ChannelChange, 1024)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		close(ch)
		return ch, func() {}
	}
	c.watchSeq++
	id := c.watchSeq
	c.watchers[id] = ch
	return ch, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if w, ok := c.watchers[id]; ok {
			delete(c.watchers, id)
			close(w)
		}
	}
}

func (c *Client) notify(change ChannelChange) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.watchers {
		select {
		case w <- change:
		default:
			c.log.Warn("relay: channel watcher is not reading; notification dropped", "channel", change.Info.Name)
		}
	}
}

func (c *Client) rebuildSnapLocked() {
	snap := make(map[string]*Member, len(c.members))
	for k, v := range c.members {
		snap[k] = v
	}
	c.snap.Store(&snap)
}

// Join joins channel and returns once h holds the channel's state (h.Restore
// has been called); events after that state follow, in order. A channel
// that does not exist is created when the relay allows it, else the error
// matches transport.ErrNoChannel.
func (c *Client) Join(ctx context.Context, channel string, h transport.Handler) (transport.Member, error) {
	m, err := c.JoinMember(ctx, channel, h)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// JoinMember is Join returning the concrete *Member (which has PublishAsync).
func (c *Client) JoinMember(ctx context.Context, channel string, h transport.Handler) (*Member, error) {
	return c.join(ctx, channel, h, false)
}

// JoinPublisher joins channel to publish only: the member receives no
// state and no events and is never asked for a checkpoint (scripts that
// only publish, load generators). It returns once the relay registered it.
func (c *Client) JoinPublisher(ctx context.Context, channel string) (*Member, error) {
	return c.join(ctx, channel, nil, true)
}

func (c *Client) join(ctx context.Context, channel string, h transport.Handler, pubOnly bool) (*Member, error) {
	if err := checkChannelName(channel); err != nil {
		return nil, fmt.Errorf("relay: join %s: %w", channel, err)
	}
	m := newMember(c, channel, h)
	m.pubOnly = pubOnly
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, transport.ErrClosed
	}
	if c.members[channel] != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("relay: join %s: %w", channel, errf(CodeAlreadyJoined, "this process already joined channel %q", channel))
	}
	c.members[channel] = m
	c.rebuildSnapLocked()
	if c.cc != nil {
		c.next++
		m.joinReq = c.next
		c.cc.enqueue(m.joinFrame(c.next, c.epoch))
	}
	c.mu.Unlock()
	m.start()
	select {
	case <-m.ready:
		return m, nil
	case <-m.gone:
		m.wait()
		return nil, fmt.Errorf("relay: join %s: %w", channel, m.err())
	case <-ctx.Done():
		m.Leave()
		return nil, fmt.Errorf("relay: join %s: %w", channel, ctx.Err())
	}
}

// removeMember forgets m; publishes of m not yet sent fail with err. It
// returns the connection and request id to send a leave with, if any.
func (c *Client) removeMember(m *Member, err error) (sendLeave *cconn, reqID uint64) {
	var failed []*pub
	c.mu.Lock()
	if c.members[m.name] == m {
		delete(c.members, m.name)
		m.removed = true
		c.rebuildSnapLocked()
		sendLeave = c.cc
		c.next++
		reqID = c.next
	}
	failed = c.pubs.removeIf(func(p *pub) bool { return p.m == m && !p.sent })
	for _, p := range failed {
		c.dropPubLocked(p)
	}
	c.mu.Unlock()
	for _, p := range failed {
		p.done(0, err)
	}
	return sendLeave, reqID
}

// cconn is one connection of a client; its reader and writer goroutines
// are owned by the client's WaitGroup.
type cconn struct {
	cl       *Client
	nc       net.Conn
	epoch    uint64
	maxEvent int
	parser   *Parser

	// The reader's cache of the member its last event went to, and the
	// events parsed from the current read, not yet handed to pendM.
	evSnap     *map[string]*Member
	evName     string
	evM        *Member
	pendM      *Member
	pend       []mitem
	lastSender string
	payloads   payload.Blocks // copies of received payloads that Handlers may keep

	mu      sync.Mutex // protects segs, out, closed, cerr
	segs    [][]byte   // buffers to write before out (large chunks by reference)
	out     []byte
	closed  bool
	cerr    error
	wake    chan struct{}
	dead    chan struct{}
	deadOne sync.Once

	heard atomic.Int64 // when the reader last got bytes (Unix ns)
}

// pubSlabSize is the size of the blocks publish frames are carved from:
// consecutive publishes lie next to each other in memory, so the writer
// sends them with one write and no copy.
const pubSlabSize = 256 << 10

// pubSlab is a block publish frames are carved from. refs counts the
// frames whose publish is still in Client.pubs; at zero every frame was
// acknowledged, so the relay read it (the kernel copied it before), no
// writer will read it again, and the block may be reused.
type pubSlab struct {
	buf  []byte
	refs int
}

// maxFreeSlabs bounds the blocks kept for reuse.
const maxFreeSlabs = 8

// carve returns an empty buffer of capacity n for a publish frame, seg,
// the same n bytes as a slice whose capacity runs to the end of the block
// (for the writer to extend when the next frame follows it), and the
// block (nil for a frame of its own). Frames are never modified while
// their publish is pending. c.mu must be held.
func (c *Client) carve(n int) (b, seg []byte, slab *pubSlab) {
	if n > pubSlabSize/8 {
		b = make([]byte, 0, n)
		return b, b[:n], nil
	}
	if c.slab == nil || cap(c.slab.buf)-len(c.slab.buf) < n {
		old := c.slab
		c.slab = nil
		if old != nil && old.refs == 0 {
			c.keepSlabLocked(old)
		}
		if k := len(c.slabs); k > 0 {
			c.slab = c.slabs[k-1]
			c.slabs = c.slabs[:k-1]
			c.slab.buf = c.slab.buf[:0]
		} else {
			c.slab = &pubSlab{buf: make([]byte, 0, pubSlabSize)}
		}
	}
	sl := c.slab
	off := len(sl.buf)
	sl.buf = sl.buf[:off+n]
	sl.refs++
	return sl.buf[off : off : off+n], sl.buf[off:], sl
}

// takeSlotLocked waits for a publish slot and takes it; c.mu is held
// on return, also on error.
func (c *Client) takeSlotLocked(ctx context.Context) error {
	for c.inflight >= c.cfg.MaxInFlight {
		if c.closed {
			return transport.ErrClosed
		}
		if c.slotFree == nil {
			c.slotFree = make(chan struct{})
		}
		free := c.slotFree
		c.mu.Unlock()
		select {
		case <-free:
		case <-ctx.Done():
			c.mu.Lock()
			return ctx.Err()
		case <-c.quit:
			c.mu.Lock()
			return transport.ErrClosed
		}
		c.mu.Lock()
	}
	c.inflight++
	return nil
}

// releaseSlotLocked gives a publish slot back and wakes those waiting.
func (c *Client) releaseSlotLocked() {
	c.inflight--
	if c.slotFree != nil {
		close(c.slotFree)
		c.slotFree = nil
	}
}

// keepSlabLocked keeps an unreferenced block for reuse.
func (c *Client) keepSlabLocked(sl *pubSlab) {
	if len(c.slabs) < maxFreeSlabs {
		c.slabs = append(c.slabs, sl)
	}
}

// dropPubLocked forgets a publish taken out of c.pubs: its token and its
// frame's block are released. c.mu must be held.
func (c *Client) dropPubLocked(p *pub) {
	c.releaseSlotLocked()
	if sl := p.slab; sl != nil {
		p.slab = nil
		p.frame = nil
		if sl.refs--; sl.refs == 0 && sl != c.slab {
			c.keepSlabLocked(sl)
		}
	}
}

// uvarintLen is the encoded size of n as a uvarint.
func uvarintLen(n int) int {
	k := 1
	for ; n >= 0x80; n >>= 7 {
		k++
	}
	return k
}

// enqueuePub queues a publish frame by reference. seg is the frame, with
// capacity up to the end of its block: when it directly follows the last
// queued segment, that segment grows over it, so a burst of publishes is
// written with one system call and without copying.
func (cc *cconn) enqueuePub(seg []byte) {
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	n := len(seg)
	if len(cc.out) > 0 {
		cc.segs = append(cc.segs, cc.out)
		cc.out = nil
	}
	k := len(cc.segs)
	if last := k - 1; k > 0 && cap(cc.segs[last])-len(cc.segs[last]) >= n {
		l := cc.segs[last]
		if &l[:len(l)+1][len(l)] == &seg[0] {
			cc.segs[last] = l[:len(l)+n]
			cc.mu.Unlock()
			return // the writer is already woken for this segment
		}
	}
	cc.segs = append(cc.segs, seg)
	cc.mu.Unlock()
	select {
	case cc.wake <- struct{}{}:
	default:
	}
}

func (cc *cconn) enqueue(frame []byte) {
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	cc.out = append(cc.out, frame...)
	cc.mu.Unlock()
	select {
	case cc.wake <- struct{}{}:
	default:
	}
}

// enqueueFn appends a frame built in place.
func (cc *cconn) enqueueFn(typ byte, fn func(b []byte) []byte) {
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	var off int
	cc.out, off = beginFrame(cc.out, typ)
	cc.out = endFrame(fn(cc.out), off)
	cc.mu.Unlock()
	select {
	case cc.wake <- struct{}{}:
	default:
	}
}

func (cc *cconn) close(err error) {
	cc.mu.Lock()
	if !cc.closed {
		cc.closed = true
		cc.cerr = err
	}
	cc.mu.Unlock()
	cc.nc.Close()
	cc.deadOne.Do(func() { close(cc.dead) })
}

func (cc *cconn) err() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.cerr
}

func (cc *cconn) writeLoop() {
	defer cc.cl.wg.Done()
	var spare []byte
	var bufs net.Buffers
	for {
		select {
		case <-cc.wake:
		case <-cc.dead:
			return
		}
		for {
			cc.mu.Lock()
			segs := cc.segs
			cc.segs = nil
			out := cc.out
			cc.out = spare[:0]
			cc.mu.Unlock()
			n := len(out)
			for _, s := range segs {
				n += len(s)
			}
			if n > 0 {
				bufs = append(append(bufs[:0], segs...), out)
				if _, err := bufs.WriteTo(cc.nc); err != nil {
					cc.close(err)
					return
				}
				clear(bufs[:cap(bufs)])
			}
			// out is no longer referenced by cc.out: reuse it next time.
			if cap(out) <= 4<<20 {
				spare = out[:0]
			} else {
				spare = nil
			}
			if n == 0 {
				break
			}
		}
	}
}

// enqueueRef queues a frame whose tail is data, without copying data; the
// caller must not modify data afterwards.
func (cc *cconn) enqueueRef(hdr, data []byte) {
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	if len(cc.out) > 0 {
		cc.segs = append(cc.segs, cc.out)
		cc.out = nil
	}
	cc.segs = append(cc.segs, hdr)
	if len(data) > 0 {
		cc.segs = append(cc.segs, data)
	}
	cc.mu.Unlock()
	select {
	case cc.wake <- struct{}{}:
	default:
	}
}

func (cc *cconn) readLoop() {
	defer cc.cl.wg.Done()
	buf := make([]byte, 256<<10)
	for {
		n, err := cc.nc.Read(buf)
		if n > 0 {
			cc.heard.Store(time.Now().UnixNano())
			perr := cc.parser.Feed(buf[:n], cc.dispatch)
			cc.flushEvents()
			if perr != nil {
				cc.cl.log.Error("relay: bad frame from the relay; reconnecting", "err", perr)
				cc.close(perr)
				return
			}
		}
		if err != nil {
			cc.close(err)
			return
		}
	}
}

// eventFlush bounds the events parsed before they are handed to their
// member, so that its Handler starts on a large read while the rest is
// still being parsed.
const eventFlush = 32

// flushEvents hands the pending events to their member (reader goroutine).
func (cc *cconn) flushEvents() {
	if len(cc.pend) > 0 {
		cc.pendM.pushEvents(cc, cc.pend)
		clear(cc.pend)
		cc.pend = cc.pend[:0]
	}
	cc.pendM = nil
}

// dispatch handles one frame from the relay (reader goroutine).
func (cc *cconn) dispatch(typ byte, body []byte) error {
	c := cc.cl
	d := dec{b: body}
	if typ != tEvent {
		cc.flushEvents() // keep the stream order of everything else
	}
	switch typ {
	case tEvent:
		name := d.raw(maxString)
		seq := d.u64()
		sender := d.raw(maxString)
		data := d.raw(cc.parser.max)
		if d.err != nil {
			return errf(CodeProtocol, "event frame: %v", d.err)
		}
		snap := c.snap.Load()
		m := cc.evM
		if snap != cc.evSnap || string(name) != cc.evName {
			m = (*snap)[string(name)]
			cc.evSnap, cc.evName, cc.evM = snap, string(name), m
		}
		if m != nil {
			if m != cc.pendM {
				cc.flushEvents()
				cc.pendM = m
			}
			if string(sender) != cc.lastSender {
				cc.lastSender = string(sender)
			}
			cc.pend = append(cc.pend, mitem{kind: itemEvent, seq: seq, sender: cc.lastSender, data: cc.payloads.Copy(data)})
			if len(cc.pend) >= eventFlush {
				cc.flushEvents()
			}
		}
	case tAck:
		counter, seq := d.u64(), d.u64()
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "ack frame: %v", err)
		}
		c.finishPub(counter, seq, nil)
	case tAckRange:
		counter, seq, n := d.u64(), d.u64(), d.u32()
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "ack frame: %v", err)
		}
		c.finishPubs(counter, seq, n)
	case tError:
		reqID, code, msg := d.u64(), Code(d.u16()), d.str()
		if d.err != nil {
			return errf(CodeProtocol, "error frame: %v", d.err)
		}
		e := &Error{Code: code, Msg: msg}
		if reqID == 0 {
			c.log.Error("relay: the relay reported an error", "err", e)
			return nil
		}
		c.mu.Lock()
		if ch, ok := c.reqs[reqID]; ok {
			delete(c.reqs, reqID)
			c.mu.Unlock()
			ch <- callResult{err: e}
			return nil
		}
		var jm *Member
		for _, m := range c.members {
			if m.joinReq == reqID {
				jm = m
			}
		}
		c.mu.Unlock()
		if jm != nil {
			jm.fail(e)
			return nil
		}
		c.finishPub(reqID, 0, e)
	case tMemberError:
		name, code, msg := d.str(), Code(d.u16()), d.str()
		if d.err != nil {
			return errf(CodeProtocol, "member error frame: %v", d.err)
		}
		if m := (*c.snap.Load())[name]; m != nil {
			m.fail(&Error{Code: code, Msg: msg})
		}
	case tJoined:
		// The member is registered; its state follows (publishers only
		// are ready now).
		reqID := d.u64()
		if d.err != nil {
			return errf(CodeProtocol, "joined frame: %v", d.err)
		}
		c.mu.Lock()
		var jm *Member
		for _, m := range c.members {
			if m.joinReq == reqID && m.pubOnly {
				jm = m
			}
		}
		c.mu.Unlock()
		if jm != nil {
			jm.readyOnce.Do(func() { close(jm.ready) })
		}
	case tState:
		name := d.str()
		seq, total, flags := d.u64(), d.u64(), d.u8()
		chunk := d.raw(cc.parser.max)
		if d.err != nil {
			return errf(CodeProtocol, "state frame: %v", d.err)
		}
		if m := (*c.snap.Load())[name]; m != nil {
			return m.pushState(seq, total, flags, chunk)
		}
	case tCkptReq:
		name, id := d.str(), d.u64()
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "checkpoint request frame: %v", err)
		}
		m := (*c.snap.Load())[name]
		if m == nil {
			cc.enqueueFn(tCkptData, func(b []byte) []byte {
				return putBytes(putU8(putU64(putU64(putU64(putStr(b, name), id), 0), 0), chunkFailed|chunkLast), nil)
			})
			return nil
		}
		m.pushCkptReq(cc, id)
	case tOK, tChannels:
		reqID := d.u64()
		if d.err != nil {
			return errf(CodeProtocol, "%s frame: %v", frameName(typ), d.err)
		}
		c.mu.Lock()
		ch, ok := c.reqs[reqID]
		delete(c.reqs, reqID)
		c.mu.Unlock()
		if ok {
			ch <- callResult{typ: typ, body: append([]byte(nil), body...)}
		}
	case tChange:
		kind := d.u8()
		info := getInfo(&d)
		if err := d.end(); err != nil {
			return errf(CodeProtocol, "change frame: %v", err)
		}
		k := ChannelAdded
		if kind == changeRemoved {
			k = ChannelRemoved
		}
		c.notify(ChannelChange{Kind: k, Info: info})
	case tPing:
		tok := d.u64()
		cc.enqueueFn(tPong, func(b []byte) []byte { return putU64(b, tok) })
	case tPong:
	default:
		return errf(CodeProtocol, "unexpected %s frame from the relay", frameName(typ))
	}
	return nil
}

// finishPubs completes n publishes acknowledged by one range.
func (c *Client) finishPubs(counter, seq uint64, n uint32) {
	var buf [64]*pub
	var prev []*pub
	for n > 0 {
		k := min(n, uint32(len(buf)))
		c.mu.Lock()
		c.recycleLocked(prev) // before buf is refilled
		ps := buf[:0]
		for i := uint32(0); i < k; i++ {
			if p := c.pubs.take(counter + uint64(i)); p != nil {
				c.dropPubLocked(p)
				ps = append(ps, p)
			} else {
				ps = append(ps, nil)
			}
		}
		c.mu.Unlock()
		for i, p := range ps {
			if p != nil {
				p.done(seq+uint64(i), nil)
			}
		}
		prev = ps
		counter += uint64(k)
		seq += uint64(k)
		n -= k
	}
	if len(prev) > 0 {
		c.mu.Lock()
		c.recycleLocked(prev)
		c.mu.Unlock()
	}
}

// maxFreePubs bounds the records kept for reuse.
const maxFreePubs = 4096

// recycleLocked keeps completed publish records for reuse (no one refers
// to a record once it left c.pubs and its done was called). c.mu held.
func (c *Client) recycleLocked(ps []*pub) {
	for _, p := range ps {
		if p != nil && len(c.freePubs) < maxFreePubs {
			*p = pub{}
			c.freePubs = append(c.freePubs, p)
		}
	}
}

func (c *Client) finishPub(counter, seq uint64, err error) {
	c.mu.Lock()
	p := c.pubs.take(counter)
	ok := p != nil
	if ok {
		c.dropPubLocked(p)
	}
	c.mu.Unlock()
	if ok {
		p.done(seq, err)
	}
}
