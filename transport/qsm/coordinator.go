package qsm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// Frame types on the service-to-coordinator link. ONLY APPEND TO THIS
// LIST: the values are part of the protocol.
const (
	gmsHello     uint8 = 1  // service -> coordinator: magic, versions, node id, name, address
	gmsWelcome   uint8 = 2  // coordinator -> service: version, heartbeat interval, missed count
	gmsGroups    uint8 = 3  // service -> coordinator: groups joined and left
	gmsHeartbeat uint8 = 4  // service -> coordinator: still alive
	gmsView      uint8 = 5  // coordinator -> service: a membership view
	gmsError     uint8 = 6  // either way: code and message, then the link closes
	gmsViewAck   uint8 = 7  // service -> coordinator: view number installed
	gmsStable    uint8 = 8  // coordinator -> service: every node has installed this view
	gmsListReq   uint8 = 9  // service -> coordinator (version 3): request id
	gmsList      uint8 = 10 // coordinator -> service (version 3): request id, channels (see appendChannels)
	gmsChallenge uint8 = 11 // coordinator -> service, with a key: nonce, tag (see dgAuth)
	gmsProof     uint8 = 12 // service -> coordinator, with a key: tag
)

// gmsMagic opens a hello on the coordinator link.
const gmsMagic = "QSMG"

// Coordinator keeps the channels and hosts the global membership service:
// services tell it the groups they join and leave and send heartbeats; it
// issues numbered views to every service and removes a node silent for
// HeartbeatInterval x MissedHeartbeats.
type Coordinator struct {
	cfg Config
	log *slog.Logger

	ln     net.Listener
	wg     sync.WaitGroup
	quit   chan struct{}
	closed sync.Once

	mu       sync.Mutex // protects everything below
	nodes    map[uint64]*gmsNode
	names    map[uint64]string // group id -> name, of the groups some node belongs to
	refs     map[uint64]int    // group id -> number of nodes in it
	view     *View
	viewNum  uint64
	epochs   map[uint64]regionEpoch // region id -> epoch and members of the last view
	addrs    map[uint64]netip.Addr  // region id -> multicast address in use
	pending  bool                   // a view is scheduled
	stable   uint64                 // highest view every node has installed
	kick     chan struct{}          // wakes viewLoop
	viewSubs []chan struct{}        // closed on every new view (for tests)
}

type regionEpoch struct {
	epoch   uint64
	members []uint64
}

// gmsNode is one connected service.
type gmsNode struct {
	info      NodeInfo
	groups    map[uint64]string
	sorted    []uint64 // the ids of groups, ascending
	region    uint64   // regionID(sorted) (0: no groups)
	lastHeard time.Time
	conn      net.Conn
	installed uint64     // highest view the node says it installed
	wmu       sync.Mutex // serializes writes to conn
	w         *bufio.Writer
	broken    bool // a write failed and conn is closed (under wmu)
	gone      bool
}

// NewCoordinator checks cfg and returns a coordinator that listens on
// cfg.GMSAddress once started.
func NewCoordinator(cfg Config) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("qsm: coordinator: %w", err)
	}
	return &Coordinator{
		cfg:    cfg,
		log:    slog.Default().With("qsm", "coordinator"),
		quit:   make(chan struct{}),
		nodes:  map[uint64]*gmsNode{},
		names:  map[uint64]string{},
		refs:   map[uint64]int{},
		epochs: map[uint64]regionEpoch{},
		addrs:  map[uint64]netip.Addr{},
		view:   &View{},
		kick:   make(chan struct{}, 1),
	}, nil
}

// Start listens on cfg.GMSAddress (port 0 picks a free one; see Addr) and
// serves services until Close or until ctx ends.
func (c *Coordinator) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", c.cfg.GMSAddress)
	if err != nil {
		return fmt.Errorf("qsm: coordinator: listen %s: %w", c.cfg.GMSAddress, err)
	}
	c.ln = ln
	c.log.Info("coordinator listening", "addr", ln.Addr().String(), "authenticated", len(c.cfg.Key) > 0)
	c.goroutine(c.acceptLoop)
	c.goroutine(c.sweepLoop)
	c.goroutine(c.viewLoop)
	c.goroutine(func() {
		select {
		case <-ctx.Done():
			// Close waits for every goroutine of the wait group, this
			// one included: it must run on a goroutine of its own.
			go c.Close()
		case <-c.quit:
		}
	})
	return nil
}

func (c *Coordinator) goroutine(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// Addr returns the address the coordinator listens on (gms_address for
// the services), or "" before Start.
func (c *Coordinator) Addr() string {
	if c.ln == nil {
		return ""
	}
	return c.ln.Addr().String()
}

// Close stops the coordinator and drops every service link. It is
// idempotent.
func (c *Coordinator) Close() error {
	c.closed.Do(func() {
		close(c.quit)
		if c.ln != nil {
			c.ln.Close()
		}
		c.mu.Lock()
		for _, n := range c.nodes {
			n.conn.Close()
		}
		c.mu.Unlock()
	})
	c.wg.Wait()
	return nil
}

// View returns the current view.
func (c *Coordinator) View() *View {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.view
}

// Channels lists the groups some node has joined; Members counts the
// nodes (services) with members in the group.
func (c *Coordinator) Channels() []transport.ChannelInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	count := map[uint64]int{}
	for _, n := range c.nodes {
		for g := range n.groups {
			count[g]++
		}
	}
	var out []transport.ChannelInfo
	for g, k := range count {
		out = append(out, transport.ChannelInfo{Name: c.names[g], Members: k})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// waitView returns a channel closed when the next view is issued.
func (c *Coordinator) waitView() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{})
	c.viewSubs = append(c.viewSubs, ch)
	return ch
}

func (c *Coordinator) acceptLoop() {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			select {
			case <-c.quit:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			c.log.Error("accept failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c.goroutine(func() { c.serve(conn) })
	}
}

func (c *Coordinator) sweepLoop() {
	t := time.NewTicker(max(c.cfg.HeartbeatInterval/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-c.quit:
			return
		case now := <-t.C:
			var dead []*gmsNode
			c.mu.Lock()
			for _, n := range c.nodes {
				if now.Sub(n.lastHeard) > c.cfg.FailureTimeout() {
					dead = append(dead, n)
				}
			}
			c.mu.Unlock()
			for _, n := range dead {
				c.log.Warn("node failed: no heartbeat", "node", n.info.Name, "silent", now.Sub(n.lastHeard).Round(time.Millisecond))
				c.remove(n)
				n.conn.Close()
			}
		}
	}
}

// authenticate runs the coordinator's side of the key handshake (see
// dgAuth) for a hello whose service sent nonceS (nil: it has no key).
func (c *Coordinator) authenticate(conn net.Conn, fr *frameReader, hello, nonceS []byte) error {
	key := c.cfg.Key
	switch {
	case len(key) == 0 && nonceS == nil:
		return nil
	case len(key) == 0:
		return fmt.Errorf("%w: %w: the service has a key and this coordinator none (give both the same key_file)", transport.ErrDenied, ErrAuth)
	case nonceS == nil:
		return fmt.Errorf("%w: %w: the service has no key and this coordinator has one (give the service the same key_file)", transport.ErrDenied, ErrAuth)
	}
	nonceC := newNonce()
	ch := append(bytes.Clone(nonceC), handshakeTag(key, labelCoordinator, nonceS, nonceC, hello)...)
	if _, err := conn.Write(appendFrame(nil, gmsChallenge, ch)); err != nil {
		return err
	}
	t, body, err := fr.next()
	if err != nil {
		return fmt.Errorf("service left during the key handshake: %w", err)
	}
	if t != gmsProof {
		return fmt.Errorf("%w: frame type %d where the key handshake wants a proof", ErrMalformed, t)
	}
	if !hmac.Equal(body, handshakeTag(key, labelService, nonceS, nonceC, hello)) {
		return fmt.Errorf("%w: %w: the service's proof does not match this coordinator's key (another key_file?)", transport.ErrDenied, ErrAuth)
	}
	return nil
}

// serve runs one service link.
func (c *Coordinator) serve(conn net.Conn) {
	defer conn.Close()
	fr := newFrameReader(conn, maxHello)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	t, body, err := fr.next()
	var n *gmsNode
	switch {
	case err == nil:
		fr.max = maxFrame
		n, err = c.hello(conn, fr, t, body)
	case !errors.Is(err, ErrMalformed): // not a frame over the cap
		c.log.Debug("link closed before hello", "remote", conn.RemoteAddr().String(), "err", err)
		return
	}
	if err != nil {
		c.log.Warn("rejected service", "remote", conn.RemoteAddr().String(), "err", err)
		conn.Write(gmsErrorFrame(err))
		return
	}
	defer func() {
		c.remove(n)
	}()
	for {
		conn.SetReadDeadline(time.Now().Add(c.cfg.FailureTimeout() + c.cfg.HeartbeatInterval))
		t, body, err := fr.next()
		if err != nil {
			c.log.Info("service link closed", "node", n.info.Name, "err", err)
			return
		}
		c.mu.Lock()
		if n.gone {
			c.mu.Unlock()
			return
		}
		n.lastHeard = time.Now()
		c.mu.Unlock()
		switch t {
		case gmsHeartbeat:
		case gmsViewAck:
			d := decoder{b: body}
			v := d.u64()
			if err := d.done(); err != nil {
				c.log.Warn("bad view ack", "node", n.info.Name, "err", err)
				return
			}
			c.mu.Lock()
			if num := c.viewNum; v > num {
				// No node can have installed a view not issued yet.
				c.mu.Unlock()
				c.log.Warn("view ack beyond the current view", "node", n.info.Name, "ack", v, "view", num)
				continue
			}
			n.installed = max(n.installed, v)
			c.mu.Unlock()
			c.checkStable()
		case gmsGroups:
			d := decoder{b: body}
			na := d.count(2)
			adds := make([]string, 0, na)
			for i := 0; i < na && d.err == nil; i++ {
				adds = append(adds, d.str())
			}
			nr := d.count(2)
			rems := make([]string, 0, nr)
			for i := 0; i < nr && d.err == nil; i++ {
				rems = append(rems, d.str())
			}
			if err := d.done(); err != nil {
				c.log.Warn("bad groups frame", "node", n.info.Name, "err", err)
				return
			}
			c.mu.Lock()
			gs := groupSetAfter(n.sorted, adds, rems)
			region := uint64(0)
			if len(gs) > 0 {
				region = regionID(gs)
			}
			var refuse error
			if k := len(gs); k > c.cfg.MaxGroups {
				refuse = fmt.Errorf("%w: node %s asks for %d groups; max_groups is %d", transport.ErrDenied, n.info.Name, k, c.cfg.MaxGroups)
			} else if size := c.viewSizeLocked(n, region, k); size > maxViewBytes {
				refuse = fmt.Errorf("%w: node %s's %d groups would make the membership view %d bytes, over the %d a view may take: the nodes' group sets differ too much (each distinct set lists its groups in every view); give nodes fewer groups, or the same ones", transport.ErrDenied, n.info.Name, k, size, maxViewBytes)
			}
			if refuse != nil {
				c.mu.Unlock()
				c.log.Warn("refused groups", "node", n.info.Name, "err", refuse)
				c.broadcast([]*gmsNode{n}, gmsErrorFrame(refuse))
				return
			}
			n.region, n.sorted = region, gs
			for _, g := range adds {
				id := GroupID(g)
				if !hasGroup(n, id) {
					c.refs[id]++
				}
				n.groups[id] = g
				c.names[id] = g
			}
			for _, g := range rems {
				if id := GroupID(g); hasGroup(n, id) {
					delete(n.groups, id)
					c.unrefLocked(id)
				}
			}
			c.scheduleLocked()
			c.mu.Unlock()
		case gmsListReq:
			d := decoder{b: body}
			req := d.u32()
			if err := d.done(); err != nil {
				c.log.Warn("bad list request", "node", n.info.Name, "err", err)
				return
			}
			e := encoder{}
			e.u32(req)
			e.b = appendChannels(e.b, c.Channels())
			c.broadcast([]*gmsNode{n}, appendFrame(nil, gmsList, e.b))
		default:
			c.log.Warn("unknown frame from service", "node", n.info.Name, "type", t)
			return
		}
	}
}

func (c *Coordinator) hello(conn net.Conn, fr *frameReader, t uint8, body []byte) (*gmsNode, error) {
	if t != gmsHello {
		return nil, fmt.Errorf("%w: first frame has type %d, not hello", ErrMalformed, t)
	}
	hello := bytes.Clone(body) // body is only valid until the next frame
	d := decoder{b: hello}
	magic := d.take(4)
	vmin, vmax := d.u8(), d.u8()
	id := d.u64()
	name := d.str()
	addr := d.str()
	var nonceS []byte
	if d.err == nil && len(d.b) > 0 {
		nonceS = d.take(nonceSize) // a service with a key
	}
	if err := d.done(); err != nil {
		return nil, err
	}
	if string(magic) != gmsMagic {
		return nil, ErrBadMagic
	}
	if vmin > ProtocolVersionMax || vmax < ProtocolVersionMin {
		return nil, fmt.Errorf("%w: service speaks %d-%d, coordinator %d-%d", ErrVersion, vmin, vmax, ProtocolVersionMin, ProtocolVersionMax)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || id == 0 {
		return nil, fmt.Errorf("%w: hello with node id %d, address %q", ErrMalformed, id, addr)
	}
	if err := c.authenticate(conn, fr, hello, nonceS); err != nil {
		return nil, err
	}
	n := &gmsNode{
		info:      NodeInfo{ID: id, Name: name, Addr: ap},
		groups:    map[uint64]string{},
		lastHeard: time.Now(),
		conn:      conn,
		w:         bufio.NewWriterSize(conn, 64<<10),
	}
	e := encoder{}
	e.u8(ProtocolVersionMax)
	e.u32(uint32(c.cfg.HeartbeatInterval / time.Millisecond))
	e.u32(uint32(c.cfg.MissedHeartbeats))
	c.mu.Lock()
	for oid, o := range c.nodes {
		// A node that comes back on a new link (the old one is dead but
		// not noticed yet) has the same id, address and host; anyone
		// else claiming its id or its address would take its traffic.
		if oid == id && (o.info.Addr != ap || !sameHost(o.conn, conn)) || oid != id && o.info.Addr == ap {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: node %016x at %s: node %016x (%s) at %s, from %s, is in the view", transport.ErrDenied,
				id, ap, oid, o.info.Name, o.info.Addr, o.conn.RemoteAddr())
		}
	}
	if old := c.nodes[id]; old != nil {
		old.gone = true
		old.conn.Close()
	}
	c.nodes[id] = n
	c.scheduleLocked()
	c.mu.Unlock()
	n.wmu.Lock()
	n.w.Write(appendFrame(nil, gmsWelcome, e.b))
	err = n.w.Flush()
	n.wmu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("qsm: coordinator: welcome %s: %w", name, err)
	}
	c.log.Info("service joined", "node", name, "addr", addr)
	return n, nil
}

// groupSetAfter returns the ids of the groups sorted (ascending, no
// repeats) after adding adds and then removing rems, as the groups frame
// does. It merges rather than sorts the whole set again: a node that
// joins groups one at a time costs the coordinator the size of its set
// per frame, not that times its logarithm, and no map.
func groupSetAfter(sorted []uint64, adds, rems []string) []uint64 {
	a := make([]uint64, 0, len(adds))
	for _, g := range adds {
		a = append(a, GroupID(g))
	}
	slices.Sort(a)
	a = slices.Compact(a)
	r := make([]uint64, 0, len(rems))
	for _, g := range rems {
		r = append(r, GroupID(g))
	}
	slices.Sort(r)
	out := make([]uint64, 0, len(sorted)+len(a))
	keep := func(id uint64) {
		if _, removed := slices.BinarySearch(r, id); !removed {
			out = append(out, id)
		}
	}
	i, j := 0, 0
	for i < len(sorted) || j < len(a) {
		switch {
		case j == len(a) || i < len(sorted) && sorted[i] < a[j]:
			keep(sorted[i])
			i++
		case i == len(sorted) || a[j] < sorted[i]:
			keep(a[j])
			j++
		default: // in both
			keep(sorted[i])
			i++
			j++
		}
	}
	return out
}

// hasGroup reports whether node n is in group id (whatever its name: a
// node may send an empty one).
func hasGroup(n *gmsNode, id uint64) bool {
	_, ok := n.groups[id]
	return ok
}

// unrefLocked notes that a node left group id, forgetting its name when
// no node is in it any more.
func (c *Coordinator) unrefLocked(id uint64) {
	if c.refs[id]--; c.refs[id] <= 0 {
		delete(c.refs, id)
		delete(c.names, id)
	}
}

// maxViewBytes bounds an encoded view, so that it always fits a frame
// (a variable so that tests can lower it).
var maxViewBytes = maxFrame - 1024

// viewSizeLocked returns the size of the encoded view (View.encode) that
// the nodes make with node changed in region (0: none) with ngroups
// groups. A view lists every node and, for each distinct group set, its
// groups and members: nodes sharing their groups cost 8 bytes each,
// nodes with sets of their own cost their whole set.
func (c *Coordinator) viewSizeLocked(changed *gmsNode, region uint64, ngroups int) int {
	size := 8 + 4 + 4
	seen := make(map[uint64]bool)
	for _, n := range c.nodes {
		size += 8 + 2 + min(len(n.info.Name), maxString) + 2 + len(n.info.Addr.String())
		r, k := n.region, len(n.groups)
		if n == changed {
			r, k = region, ngroups
		}
		if k == 0 {
			continue
		}
		size += 8
		if !seen[r] {
			seen[r] = true
			size += 8 + 8 + 4 + 4 + 4 + 8*k
		}
	}
	return size
}

// gmsErrorFrame is the frame that tells a service why its link ends.
func gmsErrorFrame(err error) []byte {
	e := encoder{}
	e.u16(errorCode(err))
	e.str(err.Error())
	return appendFrame(nil, gmsError, e.b)
}

// sameHost reports whether two links come from the same IP address.
func sameHost(a, b net.Conn) bool {
	ta, ok1 := a.RemoteAddr().(*net.TCPAddr)
	tb, ok2 := b.RemoteAddr().(*net.TCPAddr)
	return ok1 && ok2 && ta.IP.Equal(tb.IP)
}

// remove drops a node and schedules a view without it.
func (c *Coordinator) remove(n *gmsNode) {
	c.mu.Lock()
	if c.nodes[n.info.ID] == n {
		delete(c.nodes, n.info.ID)
		for id := range n.groups {
			c.unrefLocked(id)
		}
		c.scheduleLocked()
	}
	n.gone = true
	c.mu.Unlock()
	c.checkStable()
}

// checkStable tells every node when all of them have installed a newer
// view: joins complete then, as every sender has the joiner in its view.
func (c *Coordinator) checkStable() {
	c.mu.Lock()
	stable := c.viewNum
	for _, n := range c.nodes {
		stable = min(stable, n.installed)
	}
	if stable <= c.stable {
		c.mu.Unlock()
		return
	}
	c.stable = stable
	targets := make([]*gmsNode, 0, len(c.nodes))
	for _, n := range c.nodes {
		targets = append(targets, n)
	}
	c.mu.Unlock()
	e := encoder{}
	e.u64(stable)
	c.broadcast(targets, appendFrame(nil, gmsStable, e.b))
}

// broadcast writes frame to every target, dropping nodes that cannot take
// it within the failure timeout. A dropped node is skipped, and reported
// once, until its link's reader removes it.
func (c *Coordinator) broadcast(targets []*gmsNode, frame []byte) {
	for _, n := range targets {
		n.wmu.Lock()
		if n.broken {
			n.wmu.Unlock()
			continue
		}
		n.conn.SetWriteDeadline(time.Now().Add(c.cfg.FailureTimeout()))
		n.w.Write(frame)
		err := n.w.Flush()
		n.broken = err != nil
		n.wmu.Unlock()
		if err != nil {
			c.log.Warn("cannot write to service; dropping it", "node", n.info.Name, "err", err)
			n.conn.Close()
		}
	}
}

// scheduleLocked arranges for a view to be issued after ViewDelay, which
// gathers bursts of joins into one view.
func (c *Coordinator) scheduleLocked() {
	if c.pending {
		return
	}
	c.pending = true
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// viewLoop issues a view ViewDelay after each change.
func (c *Coordinator) viewLoop() {
	for {
		select {
		case <-c.quit:
			return
		case <-c.kick:
		}
		select {
		case <-c.quit:
			return
		case <-time.After(c.cfg.ViewDelay):
		}
		c.issue()
	}
}

// issue computes the next view and sends it to every node.
func (c *Coordinator) issue() {
	select {
	case <-c.quit:
		return
	default:
	}
	c.mu.Lock()
	c.pending = false
	c.viewNum++
	v := c.computeLocked(c.viewNum)
	c.view = v
	targets := make([]*gmsNode, 0, len(c.nodes))
	for _, n := range c.nodes {
		targets = append(targets, n)
	}
	subs := c.viewSubs
	c.viewSubs = nil
	c.mu.Unlock()
	for _, ch := range subs {
		close(ch)
	}
	c.log.Debug("issuing view", "view", v.Number, "nodes", len(v.Nodes), "regions", len(v.Regions))
	c.broadcast(targets, appendFrame(nil, gmsView, v.encode()))
	// With no nodes left (or all already there), stability moves on too.
	c.checkStable()
}

// computeLocked builds view number num from the node table.
func (c *Coordinator) computeLocked(num uint64) *View {
	v := &View{Number: num}
	byRegion := map[uint64]*Region{}
	for _, n := range c.nodes {
		v.Nodes = append(v.Nodes, n.info)
		if len(n.sorted) == 0 {
			continue
		}
		r := byRegion[n.region]
		if r == nil {
			// n.sorted is replaced, never changed in place: the view may
			// share it.
			r = &Region{ID: n.region, Groups: n.sorted}
			byRegion[n.region] = r
		}
		r.Members = append(r.Members, n.info.ID)
	}
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })
	ids := make([]uint64, 0, len(byRegion))
	for id := range byRegion {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// Keep the multicast addresses of regions that persist; give new
	// regions a free address near their hash.
	used := map[netip.Addr]bool{}
	newAddrs := map[uint64]netip.Addr{}
	for _, id := range ids {
		if a, ok := c.addrs[id]; ok {
			newAddrs[id] = a
			used[a] = true
		}
	}
	size := uint64(1) << (32 - c.cfg.Multicast.Bits())
	base := c.cfg.Multicast.Addr().As4()
	baseN := uint64(base[0])<<24 | uint64(base[1])<<16 | uint64(base[2])<<8 | uint64(base[3])
	for _, id := range ids {
		if _, ok := newAddrs[id]; ok {
			continue
		}
		for probe := uint64(0); probe < size; probe++ {
			off := (id + probe) % size
			if off == 0 || off == size-1 {
				continue
			}
			x := baseN + off
			a := netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
			if !used[a] || probe == size-1 {
				newAddrs[id] = a
				used[a] = true
				break
			}
		}
	}
	c.addrs = newAddrs
	newEpochs := map[uint64]regionEpoch{}
	for _, id := range ids {
		r := byRegion[id]
		slices.Sort(r.Members)
		r.Addr = newAddrs[id]
		if old, ok := c.epochs[id]; ok && slices.Equal(old.members, r.Members) {
			r.Epoch = old.epoch
		} else {
			r.Epoch = num
		}
		newEpochs[id] = regionEpoch{epoch: r.Epoch, members: r.Members}
		v.Regions = append(v.Regions, *r)
	}
	c.epochs = newEpochs
	return v
}

// errCoordinatorClosed reports a coordinator link that closed.
var errCoordinatorClosed = errors.New("qsm: coordinator link closed")

// maxListed caps the channels one listing carries (their names are at
// most maxString bytes each, so the frame stays below maxFrame).
const maxListed = 100000

// appendChannels encodes a channel list: a count, then per channel its
// name and the number of nodes with members in it.
func appendChannels(b []byte, list []transport.ChannelInfo) []byte {
	if len(list) > maxListed {
		list = list[:maxListed]
	}
	e := encoder{b: b}
	e.u32(uint32(len(list)))
	for _, ch := range list {
		e.str(ch.Name)
		e.u32(uint32(max(ch.Members, 0)))
	}
	return e.b
}

// decodeChannels decodes what appendChannels encoded.
func decodeChannels(d *decoder) []transport.ChannelInfo {
	n := d.count(6)
	if n > maxListed {
		d.fail(fmt.Errorf("%w: %d channels listed (at most %d)", ErrMalformed, n, maxListed))
		return nil
	}
	out := make([]transport.ChannelInfo, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		name := d.str()
		out = append(out, transport.ChannelInfo{Name: name, Members: int(d.u32())})
	}
	return out
}
