package qsm

import (
	"cmp"
	"encoding/binary"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/liveobjects/liveobjects/transport/internal/payload"
	"golang.org/x/net/ipv4"
)

// engine is a service's protocol stack. One goroutine (run) owns all of
// its state: packets, views and client requests arrive on in, and the
// engine writes datagrams and client frames itself, so nothing here is
// locked.
type engine struct {
	s    *Service
	log  *slog.Logger
	auth *dgAuth           // seals outgoing datagrams (nil: no key)
	in   chan any          // views and client requests
	data chan *packetBatch // data datagrams, in batches from the readers
	ctl  chan any          // tokens and acks, handled first

	view      *View
	nodeAddrs map[netip.AddrPort]bool // the addresses of the view's nodes, which all data comes from
	region    *Region                 // my region in view, nil when I belong to no group
	joinEpoch uint64                  // region epoch when I entered my region
	parts     [][]uint64
	myPart    int
	myIdx     int
	mcast     netip.Addr // multicast group joined on mconn
	ready     bool

	clients    map[*svcClient]bool
	direct     []*directLink // the links of the attached clients among them
	members    map[memberKey]*localMember
	unjoined   []*localMember // joins waiting for a view
	stableView uint64         // every node has installed this view
	newSession bool           // the coordinator link was re-established: accept any view number
	groups     map[uint64]*localGroup
	// groupDiff holds the changes to groups not yet told to the
	// coordinator, by name: +1 joined, -1 left. They go in one frame
	// when the engine flushes, so that a client joining many groups at
	// once costs the coordinator one frame, not one per group.
	groupDiff  map[string]int8
	nextSource uint32

	sends      map[uint64]*sendStream // by region id
	targets    map[uint64][]*sendStream
	targetsGen uint64                 // counts the resets of targets; localMember.tsGen
	recvs      map[uint64]*recvStream // by sender node id, in my region
	pending    []pendingPub
	pubSeq     uint64 // events published by this node: their order across streams

	// Region changes (see handover): the last event delivered per
	// publishing membership, so that each event is delivered once
	// whichever stream brings it; and the groups this node kept across its
	// last change of region, whose handed-over copies it delivers.
	lastGSeq map[uint64]*sourceTable // by sender node
	carried  map[uint64]bool

	round       [2]uint64 // rounds I started as leader, per level
	roundAt     [2]time.Time
	inRound     [2]bool               // a round I started has not come back yet
	lastToken   *tokenBody            // partition leader: the token of the last completed round
	rtt         time.Duration         // smoothed time of a round
	seenRound   [2]uint64             // highest round seen as a non-leader, per level
	backRound   [2]uint64             // highest round whose token came back to me as leader, per level
	prevStable  map[uint64]uint64     // partition leader: sender -> min ack of the last round
	prevLack    map[uint64][]slotLack // partition leader: sender -> what each node lacked in the last round
	partSummary map[uint64]*streamSummary
	// With more than one partition, a node frees a message only when the
	// whole region holds it (not just its partition), so that a partition
	// leader can still hand it to another partition after its sender
	// failed.
	regionStable map[uint64]uint64 // partition leader: sender -> the region's stable point, from the region token
	lastRegion   *tokenBody        // region leader: the token of the last completed region round

	allowance float64
	allowAt   time.Time
	// windowFullAt is when a publish was first held back by a full
	// window, zero while publishes go out (see Stats.WindowFullMicros).
	windowFullAt time.Time
	tick         time.Duration
	dirty        []*sendStream
	fwd          dgBuilder
	udpAddrs     map[netip.AddrPort]*net.UDPAddr // destinations of queued repairs
	outbox       []ipv4.Message                  // data datagrams waiting for one batched send
	spareBufs    [][]byte                        // buffers of sent outbox datagrams, for reuse
	outMsgs      slab[outMsg]                    // what appendEvent's messages are cut from

	// After a coordinator session ends (keepForSession): carryOver holds
	// the unstable messages of the send streams of the last session, and
	// awaited, per local group, the nodes that had the group then and are
	// not back in a region of it yet; each node that comes back is handed
	// the messages (until carryUntil), and publishes to a group wait for
	// its nodes until awaitUntil. sessionGroups are the groups this node
	// had then (whose handed-over messages it takes).
	carryOver     []*outMsg
	awaited       map[uint64]map[uint64]bool
	carryUntil    time.Time
	awaitUntil    time.Time
	sessionGroups map[uint64]bool
	deaf          bool                                       // tests: drop every data datagram received
	mute          bool                                       // tests: send nothing of its own again (naks, token visits)
	lose          func(sender, streamEpoch, seq uint64) bool // tests: drop these received messages (see onData)
}

type memberKey struct {
	c  *svcClient
	id uint32
}

// sourceLast is the last event delivered here from a publishing
// membership (a sender node and the source number of one of its members),
// and the local group it was delivered to.
type sourceLast struct {
	group uint64
	gseq  uint64 // 0: none yet
	g     *localGroup
}

// sourceTable holds the sourceLast of every publishing membership of one
// sender node. Senders number their memberships 1, 2, 3...: those below
// denseSources are found by index, the others in a map.
type sourceTable struct {
	dense []sourceLast
	more  map[uint32]*sourceLast
}

const denseSources = 1 << 16

// maxSparseSources caps the entries of a sender's sourceTable above
// denseSources: a sender that numbers more memberships than that is
// refused new ones (Stats.SourcesRefused) while the entries it has keep
// suppressing duplicates. A variable for tests.
var maxSparseSources = 1 << 16

// find returns the entry of source, or nil. An entry of a group that has
// lost its last local member since is dropped as it is found: leaving a
// group costs nothing here, however many groups and sources there are.
func (t *sourceTable) find(source uint32) *sourceLast {
	if source < denseSources {
		if int(source) >= len(t.dense) || t.dense[source].gseq == 0 {
			return nil
		}
		sl := &t.dense[source]
		if sl.g.gone {
			*sl = sourceLast{}
			return nil
		}
		return sl
	}
	sl := t.more[source]
	if sl != nil && sl.g.gone {
		delete(t.more, source)
		return nil
	}
	return sl
}

// add returns the entry of source, making room for it, or nil when
// source is above denseSources and the table holds maxSparseSources
// such entries already.
func (t *sourceTable) add(source uint32) *sourceLast {
	if source < denseSources {
		if int(source) >= len(t.dense) {
			t.dense = slices.Grow(t.dense, int(source)+1-len(t.dense))
			t.dense = t.dense[:int(source)+1]
		}
		return &t.dense[source]
	}
	if t.more == nil {
		t.more = map[uint32]*sourceLast{}
	}
	sl := t.more[source]
	if sl == nil {
		if len(t.more) >= maxSparseSources {
			t.sweep()
		}
		if len(t.more) >= maxSparseSources {
			return nil
		}
		sl = &sourceLast{}
		t.more[source] = sl
	}
	return sl
}

// sweep drops the entries above denseSources of groups that have lost
// their last local member, to make room.
func (t *sourceTable) sweep() {
	for k, sl := range t.more {
		if sl.g.gone {
			delete(t.more, k)
		}
	}
}

// localMember is one membership of an in-process client.
type localMember struct {
	// What delivering and publishing read comes first.
	c        *svcClient
	id       uint32
	source   uint32
	inView   bool // the view has this node in the group: deliver to it
	joined   bool // every node has installed joinView: the join is complete
	gone     bool
	gseq     uint64
	g        *localGroup // the group's entry in engine.groups while !gone
	tsGen    uint64      // ts is targetsOf(group) while this is engine.targetsGen
	ts       []*sendStream
	group    uint64
	joinView uint64 // the view in which inView became true
	joinReq  uint32
}

// localGroup is a group some local member belongs to.
type localGroup struct {
	id      uint64
	name    string
	members []*localMember // in one's room while there is one
	viewKey uint64         // identifies the nodes in the group when members were last told
	nextKey uint64         // installView's scratch
	gone    bool           // no local member any more: out of engine.groups
	one     [1]*localMember
}

type pendingPub struct {
	m    *localMember
	data []byte
	blk  *payload.Block // data's block, or nil (see clientPublish)
}

// done gives up the publish's hold on its payload's block: the messages
// and deliveries made of it hold their own.
func (p *pendingPub) done() {
	if p.blk != nil {
		p.blk.Release()
		p.blk = nil
	}
}

// streamSummary is a partition's state of one stream, kept by the
// partition's leader for the region ring.
type streamSummary struct {
	hi, minAck uint64
	missing    []seqRange
}

// outMsg is a message a sender keeps until it is stable.
type outMsg struct {
	message
	resent time.Time
	pub    uint64 // the event's place in this node's publish order
	event  []byte // the whole event (Data is one fragment of it)
}

// sendStream is this node's stream of messages into one region.
type sendStream struct {
	region      uint64
	dst         netip.AddrPort
	members     []uint64 // the region's members in the view; the first leads it and acks its stability
	streamEpoch uint64
	epoch       uint64
	epochStart  uint64
	starts      []epochStart // earlier epochs whose start is not yet stable, ascending
	next        uint64       // next seq to assign
	stable      uint64       // every member of the region holds every seq <= stable
	buf         []*outMsg
	lastSend    time.Time
	b           dgBuilder
	udpDst      *net.UDPAddr // dst, for batched sends
}

// message returns the message seq of the stream while it is kept, or nil.
func (st *sendStream) message(seq uint64) *message {
	if m := st.get(seq); m != nil {
		return &m.message
	}
	return nil
}

func (st *sendStream) get(seq uint64) *outMsg {
	if seq <= st.stable || seq >= st.next {
		return nil
	}
	i := seq - st.stable - 1
	if i >= uint64(len(st.buf)) {
		return nil
	}
	return st.buf[i]
}

func (st *sendStream) unstable() int { return int(st.next - 1 - st.stable) }

// held returns the range of seqs the stream may still hold (message
// returns nil outside it; the range is empty when nothing is unstable).
func (st *sendStream) held() (lo, hi uint64) { return st.stable + 1, st.next - 1 }

func (st *sendStream) body(flags uint8) dataBody {
	return dataBody{StreamEpoch: st.streamEpoch, EpochStart: st.epochStart, Hi: st.next - 1, Flags: flags, Starts: st.starts}
}

// newEpoch starts epoch ep of the stream at the next seq, keeping the start
// of the epoch it ends while that is not stable: a node that entered the
// region in that epoch starts there, whatever epoch the first datagram it
// gets is of.
func (st *sendStream) newEpoch(ep uint64) {
	if st.epochStart > st.stable {
		if len(st.starts) == maxEpochStarts {
			st.starts = slices.Delete(st.starts, 0, 1)
		}
		st.starts = append(st.starts, epochStart{Epoch: st.epoch, Start: st.epochStart})
	}
	st.epoch = ep
	st.epochStart = st.next
}

// pruneStarts forgets the epoch starts that are stable: every node that
// entered the region in those epochs has started the stream (until it
// does, the region's acks hold stability below its start).
func (st *sendStream) pruneStarts() {
	n := 0
	for n < len(st.starts) && st.starts[n].Start <= st.stable {
		n++
	}
	if n > 0 {
		st.starts = slices.Delete(st.starts, 0, n)
		if len(st.starts) == 0 {
			st.starts = nil
		}
	}
}

// recvStream is a sender's stream into my region, as received here.
type recvStream struct {
	sender      uint64
	streamEpoch uint64
	epochStart  uint64
	started     bool
	next        uint64      // next seq to deliver
	hi          uint64      // highest seq known to exist
	pending     pendingRing // ahead of next, and the gaps among them
	kept        []*message  // delivered, kept for forwarding: seqs keptBase..next-1
	keptArr     []*message  // the array kept is in (see roomToKeep)
	keptBase    uint64
	lastStable  uint64
	frag        []byte
	lastData    time.Time
	sources     *sourceTable // engine.lastGSeq[sender], once looked up
	orphanAt    time.Time    // when the sender left the view (zero: it is in it)
}

// held returns the range of seqs the stream may hold, kept or pending (get
// returns nil outside it): onData queues nothing ahead of next by ahead
// or more.
func (rs *recvStream) held(ahead uint64) (lo, hi uint64) {
	return rs.keptBase, satAdd(rs.next, ahead)
}

// satAdd returns a+b, or 2^64-1 when that overflows.
func satAdd(a, b uint64) uint64 {
	if s := a + b; s >= a {
		return s
	}
	return math.MaxUint64
}

func (rs *recvStream) get(seq uint64) *message {
	if seq >= rs.next {
		return rs.pending.get(seq)
	}
	if seq < rs.keptBase {
		return nil
	}
	i := seq - rs.keptBase
	if i >= uint64(len(rs.kept)) {
		return nil
	}
	return rs.kept[i]
}

// stable notes that every node concerned holds every seq up to upto, and
// frees what is kept up to there.
func (rs *recvStream) stable(upto uint64) {
	if upto > rs.lastStable {
		rs.lastStable = upto
		rs.free(upto)
	}
}

// roomToKeep makes room in kept for more messages without a new array
// each time free has cut the front: kept moves back to the start of its
// array, or to a larger one when it fills more than half of it.
func (rs *recvStream) roomToKeep() {
	n := len(rs.kept)
	if len(rs.keptArr) < 2*n+64 {
		rs.keptArr = make([]*message, 2*n+64)
	}
	copy(rs.keptArr, rs.kept)
	clear(rs.keptArr[n:])
	rs.kept = rs.keptArr[:n]
}

// drop releases every message the stream holds, kept or pending, as the
// engine forgets the stream.
func (rs *recvStream) drop() {
	if len(rs.kept) > 0 {
		rs.free(rs.keptBase + uint64(len(rs.kept)) - 1)
	}
	rs.pending.each(func(_ uint64, m *message) { m.release() })
	rs.pending = pendingRing{base: rs.next}
}

// dropRecvs drops every receive stream, for a fresh start.
func (e *engine) dropRecvs() {
	for _, rs := range e.recvs {
		rs.drop()
	}
	e.recvs = map[uint64]*recvStream{}
}

func (rs *recvStream) free(upto uint64) {
	if upto < rs.keptBase {
		return
	}
	n := min(upto-rs.keptBase+1, uint64(len(rs.kept)))
	for _, m := range rs.kept[:n] {
		m.release()
	}
	clear(rs.kept[:n])
	rs.kept = rs.kept[n:]
	rs.keptBase += n
}

// dgBuilder packs messages into one data datagram.
type dgBuilder struct {
	buf  []byte
	n    int
	last uint64 // seq of the last message added
	mtu  int
	hdr  dgHeader
	to   netip.AddrPort
}

func (b *dgBuilder) begin(h dgHeader, d *dataBody, to netip.AddrPort, mtu int) {
	b.hdr, b.to, b.mtu = h, to, mtu
	b.buf = h.append(b.buf[:0])
	b.buf = appendDataHeader(b.buf, d, 0)
	b.n = 0
	b.last = 0
}

func (b *dgBuilder) fits(m *message) bool {
	return len(b.buf)+msgOverhead+len(m.Data) <= b.mtu
}

func (b *dgBuilder) add(m *message) {
	b.buf = appendMessage(b.buf, m)
	b.n++
	b.last = max(b.last, m.Seq)
}

// finish seals the datagram with hi (and a, see dgAuth) and returns it.
func (b *dgBuilder) finish(hi uint64, a *dgAuth) []byte {
	binary.BigEndian.PutUint64(b.buf[dgHeaderSize+16:], hi)
	binary.BigEndian.PutUint16(b.buf[dgHeaderSize+25:], uint16(b.n))
	b.buf = a.seal(b.buf)
	return b.buf
}

func newEngine(s *Service) *engine {
	return &engine{
		s:            s,
		auth:         newDgAuth(s.cfg.Key),
		in:           make(chan any, 4096),
		ctl:          make(chan any, 1024),
		data:         make(chan *packetBatch, 256),
		clients:      map[*svcClient]bool{},
		members:      map[memberKey]*localMember{},
		groups:       map[uint64]*localGroup{},
		sends:        map[uint64]*sendStream{},
		targets:      map[uint64][]*sendStream{},
		recvs:        map[uint64]*recvStream{},
		lastGSeq:     map[uint64]*sourceTable{},
		prevStable:   map[uint64]uint64{},
		partSummary:  map[uint64]*streamSummary{},
		regionStable: map[uint64]uint64{},
		tick:         time.Second / time.Duration(s.cfg.TokenRate),
		targetsGen:   1,
		view:         &View{},
	}
}

// recvAhead bounds how far ahead of the next seq to deliver a receiver
// takes a stream's messages and its announced end: a sender has at most
// Window messages per region unstable (a handover adds the unstable ones
// of the regions its movers came from), and everything from the next seq
// to deliver on is unstable. Messages beyond come again later, by repair,
// once the stream has moved on; a peer announcing more (a lying or
// corrupt datagram) cannot make this node queue messages or report gaps
// without bound.
func (e *engine) recvAhead() uint64 { return uint64(4 * e.s.cfg.Window) }

// mtu is the size of a datagram's header and body: the MTU less the
// authentication tag, if any.
func (e *engine) mtu() int { return e.s.cfg.MTU - e.auth.overhead() }

// maxPayload is the largest fragment that fits one datagram.
func (e *engine) maxPayload() int {
	return e.mtu() - dgHeaderSize - dataHeaderSize - epochStartsSize - msgOverhead
}

func (e *engine) run() {
	e.log = e.s.log
	t := time.NewTicker(e.tick)
	defer t.Stop()
	for {
		select {
		case ev := <-e.ctl:
			e.handle(ev)
		case b := <-e.data:
			e.handleData(b)
		case ev := <-e.in:
			e.handle(ev)
		case now := <-t.C:
			e.onTick(now)
		case <-e.s.quit:
			return
		}
	drain:
		for i := 0; i < 1024; i++ {
			// Tokens, acks and ticks go before data, so that rounds stay
			// short under load (a leader that is also a busy sender
			// starts its rounds on time).
			select {
			case ev := <-e.ctl:
				e.handle(ev)
				continue
			case now := <-t.C:
				e.onTick(now)
				continue
			default:
			}
			select {
			case b := <-e.data:
				e.handleData(b)
			case ev := <-e.in:
				e.handle(ev)
			default:
				break drain
			}
		}
		e.flush()
	}
}

// handleData handles a batch of data packets from a reader and gives
// the packets and the batch back for reuse.
func (e *engine) handleData(b *packetBatch) {
	now := time.Now()
	for _, p := range b.ps {
		if p.at.IsZero() {
			p.at = now
		}
		e.takeData(p)
	}
	b.put()
}

// takeData handles a data packet and releases the payloads of the
// messages the engine did not keep.
func (e *engine) takeData(p *packet) {
	e.onData(p)
	for i := range p.data.Msgs {
		if m := &p.data.Msgs[i]; !m.held {
			m.release()
		}
	}
}

// release gives the block of a received message's payload back, once the
// engine is done with the message (see payload.Block).
func (m *message) release() {
	if m.blk != nil {
		m.blk.Release()
		m.blk = nil
	}
}

func (e *engine) handle(ev any) {
	switch ev := ev.(type) {
	case *packet:
		switch {
		case ev.data != nil:
			e.takeData(ev)
		case ev.token != nil:
			e.onToken(ev)
		case ev.ack != nil:
			e.onAck(ev)
		}
	case *View:
		e.installView(ev)
	case gmsUp:
		// A new coordinator session (perhaps a restarted coordinator)
		// numbers views afresh.
		e.newSession = true
		e.stableView = 0
		if e.ready {
			// Region epochs restart with the numbering: start every
			// stream afresh. What was unstable is sent again in the new
			// streams once the first view of the session is installed,
			// and receivers take it for the groups they had (their
			// delivery positions drop what they already delivered).
			e.keepForSession()
			e.sends = map[uint64]*sendStream{}
			e.targets = map[uint64][]*sendStream{}
			e.targetsGen++
			e.dropRecvs()
			e.region = nil
		}
		e.sendAllGroups()
	case viewStable:
		if uint64(ev) > e.stableView {
			e.stableView = uint64(ev)
			e.checkUnjoined()
		}
	case clientUp:
		e.clients[ev.c] = true
		if ev.c.direct != nil {
			e.direct = append(e.direct, ev.c.direct)
		}
	case clientDown:
		e.clientDown(ev.c)
	case clientJoin:
		e.join(ev)
	case clientLeave:
		e.leave(ev.c, ev.member, true)
	case clientPublish:
		e.publish(ev)
	case *publishBatch:
		for _, p := range ev.pubs {
			e.publish(p)
		}
		clear(ev.pubs)
		ev.pubs = ev.pubs[:0]
		publishBatches.Put(ev)
	case func(*engine):
		ev(e)
	}
}

// --- clients ----------------------------------------------------------

func (e *engine) sendError(c *svcClient, req, member uint32, err error) {
	body := encoder{}
	body.u32(req)
	body.u32(member)
	body.u16(errorCode(err))
	body.str(err.Error())
	e.frame(c, func(b []byte) []byte { return appendFrame(b, cliError, body.b) })
}

func (e *engine) join(j clientJoin) {
	k := memberKey{j.c, j.member}
	if _, dup := e.members[k]; dup || j.channel == "" {
		e.sendError(j.c, j.req, j.member, errMalformedf("join: member %d already joined or empty channel name", j.member))
		return
	}
	e.nextSource++
	m := &localMember{c: j.c, id: j.member, group: GroupID(j.channel), source: e.nextSource, joinReq: j.req}
	e.members[k] = m
	j.c.setMember(j.member, m)
	g := e.groups[m.group]
	if g == nil {
		g = &localGroup{id: m.group, name: j.channel}
		e.groups[m.group] = g
		e.noteGroup(j.channel, +1)
	}
	if g.members == nil {
		// Most groups have one local member: keeping it in the group's
		// own allocation saves a memory load per delivered event.
		g.members = g.one[:0]
	}
	g.members = append(g.members, m)
	m.g = g
	e.checkJoined(m)
	if !m.joined {
		e.unjoined = append(e.unjoined, m)
	}
}

// checkJoined completes a join once the view has this node in the group
// and every node has installed that view (the coordinator says so), so that
// every event published after Join returns reaches the member.
func (e *engine) checkJoined(m *localMember) {
	if m.joined || e.region == nil {
		return
	}
	if !m.inView {
		if _, ok := slices.BinarySearch(e.region.Groups, m.group); !ok {
			return
		}
		m.inView = true
		m.joinView = e.view.Number
	}
	if e.stableView < m.joinView {
		return
	}
	m.joined = true
	e.sendGroupView(m, e.groupNodes(m.group))
	body := encoder{}
	body.u32(m.joinReq)
	body.u32(m.id)
	e.frame(m.c, func(b []byte) []byte { return appendFrame(b, cliJoined, body.b) })
}

// checkUnjoined retries the joins waiting for a view.
func (e *engine) checkUnjoined() {
	if len(e.unjoined) == 0 {
		return
	}
	left := e.unjoined[:0]
	for _, m := range e.unjoined {
		if !m.gone {
			e.checkJoined(m)
			if !m.joined {
				left = append(left, m)
			}
		}
	}
	clear(e.unjoined[len(left):])
	e.unjoined = left
}

func (e *engine) leave(c *svcClient, member uint32, reply bool) {
	k := memberKey{c, member}
	m := e.members[k]
	if m == nil {
		return
	}
	delete(e.members, k)
	c.setMember(member, nil)
	m.gone = true
	// Its publishes that wait go: the client has given their credits
	// back, and a client that went away holds none of it any more.
	if len(e.pending) > 0 {
		e.pending = slices.DeleteFunc(e.pending, func(p pendingPub) bool {
			if p.m == m {
				c.inflight--
				p.done()
				return true
			}
			return false
		})
		if len(e.pending) == 0 {
			e.pending = nil
			e.windowFullAt = time.Time{} // no publish waits any more
		}
	}
	g := e.groups[m.group]
	if g == nil {
		return
	}
	g.members = slices.DeleteFunc(g.members, func(x *localMember) bool { return x == m })
	if len(g.members) == 0 {
		delete(e.groups, g.id)
		g.gone = true // its delivery positions go with it (sourceTable.find)
		e.noteGroup(g.name, -1)
	}
}

func (e *engine) clientDown(c *svcClient) {
	delete(e.clients, c)
	if c.direct != nil {
		e.direct = slices.DeleteFunc(e.direct, func(l *directLink) bool { return l == c.direct })
	}
	for k := range e.members {
		if k.c == c {
			e.leave(c, k.id, false)
		}
	}
}

func (e *engine) sendGroups(add, rem []string) {
	body := encoder{}
	body.u32(uint32(len(add)))
	for _, g := range add {
		body.str(g)
	}
	body.u32(uint32(len(rem)))
	for _, g := range rem {
		body.str(g)
	}
	e.s.gmsSend(gmsGroups, body.b)
}

func (e *engine) sendAllGroups() {
	var names []string
	for _, g := range e.groups {
		names = append(names, g.name)
	}
	clear(e.groupDiff) // the whole set says it all
	e.sendGroups(names, nil)
}

// noteGroup notes that this node joined (+1) or left (-1) a group, for
// the coordinator. Of changes to one group before the next flush the last
// wins: the coordinator takes an add of a group the node has, or a
// removal of one it does not, as no change.
func (e *engine) noteGroup(name string, d int8) {
	if e.groupDiff == nil {
		e.groupDiff = map[string]int8{}
	}
	e.groupDiff[name] = d
}

// sendGroupDiff tells the coordinator the group changes noted since the
// last flush, in one frame.
func (e *engine) sendGroupDiff() {
	if len(e.groupDiff) == 0 {
		return
	}
	var add, rem []string
	for name, d := range e.groupDiff {
		if d > 0 {
			add = append(add, name)
		} else {
			rem = append(rem, name)
		}
	}
	clear(e.groupDiff)
	e.sendGroups(add, rem)
}

// groupNodes returns the ids of the nodes in group g, ascending.
func (e *engine) groupNodes(g uint64) []uint64 {
	var ids []uint64
	for _, r := range e.view.regionsOfGroup(g) {
		ids = append(ids, r.Members...)
	}
	slices.Sort(ids)
	return ids
}

func (e *engine) sendGroupView(m *localMember, ids []uint64) {
	body := encoder{}
	body.u32(m.id)
	body.u64(e.view.Number)
	body.u32(uint32(len(ids)))
	for _, id := range ids {
		name := ""
		if n := e.view.node(id); n != nil {
			name = n.Name
		}
		body.str(name)
	}
	e.frame(m.c, func(b []byte) []byte { return appendFrame(b, cliView, body.b) })
}

// frame queues a frame built by f to client c.
func (e *engine) frame(c *svcClient, f func(b []byte) []byte) { c.frame(f) }

// congested reports whether some client has more than DeliveryQueue bytes
// queued; incoming data is then refused and repaired later.
func (e *engine) congested() bool {
	for c := range e.clients {
		if c.queued() > int64(e.s.cfg.DeliveryQueue) {
			return true
		}
	}
	return false
}

// deliverLocal hands an event to every joined local member of g. blk is
// the block data was cut from (nil: none), for attached clients' members
// that borrow it.
func (e *engine) deliverLocal(g *localGroup, node uint64, source uint32, gseq uint64, data []byte, blk *payload.Block) {
	for _, m := range g.members {
		if !m.inView {
			continue
		}
		id := m.id
		if d := m.c.direct; d != nil {
			d.deliver(id, node, source, gseq, data, blk)
			e.s.ctr.delivered.Add(1)
			continue
		}
		e.frame(m.c, func(b []byte) []byte {
			b = binary.BigEndian.AppendUint32(b, uint32(1+4+8+4+8+len(data)))
			b = append(b, cliDeliver)
			b = binary.BigEndian.AppendUint32(b, id)
			b = binary.BigEndian.AppendUint64(b, node)
			b = binary.BigEndian.AppendUint32(b, source)
			b = binary.BigEndian.AppendUint64(b, gseq)
			return append(b, data...)
		})
		e.s.ctr.delivered.Add(1)
	}
}

// --- publishing -------------------------------------------------------

func (e *engine) publish(p clientPublish) {
	c := p.c
	if c.cut {
		p.drop()
		return
	}
	m := c.member(p.member)
	if m == nil && p.member >= denseMembers {
		m = e.members[memberKey{c, p.member}]
	}
	if m == nil || !m.joined {
		p.drop()
		e.sendError(c, 0, p.member, ErrUnknownMember)
		return
	}
	// A client has at most ClientCredits publishes without an answer
	// (twice that for a moment: a client gives back the credits of a
	// member that leaves as it sends the leave). One that sends more
	// would have them queue here without bound.
	if limit := 2 * e.s.cfg.ClientCredits; c.inflight >= limit {
		p.drop()
		e.cutClient(c, errMalformedf("more than %d publishes waiting for an answer (client_credits is %d)", limit, e.s.cfg.ClientCredits))
		return
	}
	c.inflight++
	e.pending = append(e.pending, pendingPub{m: m, data: p.data, blk: p.blk})
	e.admit()
}

// cutClient ends the link of a client that broke the protocol: it is told
// why, and its link closes once that is sent (serveClient's read ends).
func (e *engine) cutClient(c *svcClient, err error) {
	c.cut = true
	e.log.Warn("client broke the protocol; closing its link", "client", c.name, "err", err)
	e.sendError(c, 0, 0, err)
	c.conn.SetReadDeadline(time.Now())
}

// admit publishes pending events, in order, while the windows and the rate
// allow.
func (e *engine) admit() {
	n := 0
	for n < len(e.pending) {
		p := &e.pending[n]
		if !e.tryPublish(p) {
			break
		}
		p.m.c.inflight--
		p.done()
		*p = pendingPub{}
		n++
	}
	switch {
	case n == len(e.pending):
		// All placed: the array is kept for the next publishes, which
		// would otherwise allocate it again one by one.
		e.pending = e.pending[:0]
	case n > 0:
		e.pending = e.pending[n:]
	}
}

// targetsOf returns the send streams of group g in the current view: one
// per region of the group, except a region of this node alone.
func (e *engine) targetsOf(g uint64) []*sendStream {
	if ts, ok := e.targets[g]; ok {
		return ts
	}
	var ts []*sendStream
	for _, r := range e.view.regionsOfGroup(g) {
		if len(r.Members) == 1 && r.Members[0] == e.s.id {
			continue
		}
		st := e.sends[r.ID]
		if st == nil {
			st = &sendStream{region: r.ID, streamEpoch: r.Epoch, epoch: r.Epoch, epochStart: 1, next: 1}
			e.sends[r.ID] = st
		}
		st.dst = netip.AddrPortFrom(r.Addr, uint16(e.s.cfg.Port))
		st.members = r.Members
		ts = append(ts, st)
	}
	e.targets[g] = ts
	return ts
}

func (e *engine) tryPublish(p *pendingPub) bool {
	m := p.m
	if m.gone {
		return true // dropped: the member left
	}
	if e.newSession {
		return false // wait for the new coordinator's first view
	}
	if len(e.awaited[m.group]) > 0 && time.Now().Before(e.awaitUntil) {
		return false // wait for the group's nodes of the last session
	}
	mp := e.maxPayload()
	nfrag := max(1, (len(p.data)+mp-1)/mp)
	if m.tsGen != e.targetsGen {
		m.ts, m.tsGen = e.targetsOf(m.group), e.targetsGen
	}
	ts := m.ts
	for _, st := range ts {
		if st.unstable()+nfrag > e.s.cfg.Window {
			if e.windowFullAt.IsZero() {
				e.windowFullAt = time.Now()
			}
			return false
		}
	}
	if !e.windowFullAt.IsZero() {
		e.s.ctr.windowFull.Add(uint64(time.Since(e.windowFullAt).Microseconds()))
		e.windowFullAt = time.Time{}
	}
	if e.s.cfg.Rate > 0 && len(ts) > 0 {
		now := time.Now()
		e.allowance += now.Sub(e.allowAt).Seconds() * float64(e.s.cfg.Rate)
		e.allowAt = now
		if burst := float64(max(e.s.cfg.Rate/50, nfrag, 1)); e.allowance > burst {
			e.allowance = burst
		}
		if e.allowance < float64(nfrag) {
			return false
		}
		e.allowance -= float64(nfrag)
	}
	m.gseq++
	gseq := m.gseq
	e.pubSeq++
	e.s.ctr.published.Add(1)
	e.deliverLocal(m.g, e.s.id, m.source, gseq, p.data, p.blk)
	for _, st := range ts {
		e.appendEvent(st, message{Group: m.group, Source: m.source, GSeq: gseq}, e.pubSeq, p.data, p.blk)
	}
	if n := len(ts); n > 0 {
		e.s.ctr.sent.Add(uint64(n * nfrag))
	}
	id := m.id
	e.frame(m.c, func(b []byte) []byte {
		b = binary.BigEndian.AppendUint32(b, 1+4+8)
		b = append(b, cliPubAck)
		b = binary.BigEndian.AppendUint32(b, id)
		return binary.BigEndian.AppendUint64(b, gseq)
	})
	return true
}

// appendEvent adds an event to a send stream, in fragments of at most
// maxPayload bytes with consecutive sequence numbers, and multicasts them.
// hdr gives the message's group, source, gseq and flags (besides
// msgFlagMore); pub is the event's place in this node's publish order.
// blk, when not nil, is the block data was cut from: each fragment holds
// a reference to it until it is stable (see onAck).
func (e *engine) appendEvent(st *sendStream, hdr message, pub uint64, data []byte, blk *payload.Block) int {
	mp := e.maxPayload()
	nfrag := max(1, (len(data)+mp-1)/mp)
	for i := 0; i < nfrag; i++ {
		lo, hi := i*mp, min((i+1)*mp, len(data))
		om := &e.outMsgs.take(1)[0]
		om.message, om.pub, om.event = hdr, pub, data
		if blk != nil {
			blk.Retain()
			om.blk = blk
		}
		om.Seq = st.next
		om.Data = data[lo:hi]
		if i < nfrag-1 {
			om.Flags |= msgFlagMore
		}
		st.next++
		st.buf = append(st.buf, om)
		e.batch(st, &om.message)
	}
	return nfrag
}

// batch adds a new message to the stream's datagram, sending the datagram
// first when the message does not fit.
func (e *engine) batch(st *sendStream, m *message) {
	if st.b.n > 0 && !st.b.fits(m) {
		e.flushStream(st)
	}
	if st.b.n == 0 {
		d := st.body(0)
		st.b.begin(dgHeader{Type: dgData, Sender: e.s.id, Region: st.region, Epoch: st.epoch}, &d, st.dst, e.mtu())
		e.dirty = append(e.dirty, st)
	}
	st.b.add(m)
}

func (e *engine) flushStream(st *sendStream) {
	if st.b.n == 0 {
		return
	}
	// Hi is the last seq in this datagram: later ones are not sent yet.
	// The datagram goes out in the builder's buffer; the builder takes a
	// spare one.
	buf := st.b.finish(st.b.last, e.auth)
	st.b.buf = e.spareBuf()
	if st.udpDst == nil || st.udpDst.Port != int(st.dst.Port()) || !st.udpDst.IP.Equal(st.dst.Addr().AsSlice()) {
		st.udpDst = net.UDPAddrFromAddrPort(st.dst)
	}
	e.queueOut(buf, st.udpDst)
	st.b.n = 0
	st.lastSend = time.Now()
	if len(e.outbox) >= 256 {
		e.sendOutbox()
	}
}

// spareBuf returns an empty datagram buffer, recycled when one is spare.
func (e *engine) spareBuf() []byte {
	if n := len(e.spareBufs); n > 0 {
		b := e.spareBufs[n-1][:0]
		e.spareBufs = e.spareBufs[:n-1]
		return b
	}
	return make([]byte, 0, e.s.cfg.MTU)
}

// queueRepair seals b's datagram with hi and queues it for to in the
// outbox (b takes a spare buffer), so that the repairs of one token visit
// or one ack go out in one batch: with segmentation offload, the
// datagrams for one node are one send.
func (e *engine) queueRepair(b *dgBuilder, hi uint64, to netip.AddrPort) {
	buf := b.finish(hi, e.auth)
	b.buf = e.spareBuf()
	b.n = 0
	ua := e.udpAddrs[to]
	if ua == nil {
		ua = net.UDPAddrFromAddrPort(to)
		if e.udpAddrs == nil || len(e.udpAddrs) >= 4096 {
			e.udpAddrs = map[netip.AddrPort]*net.UDPAddr{}
		}
		e.udpAddrs[to] = ua
	}
	e.queueOut(buf, ua)
	if len(e.outbox) >= 256 {
		e.sendOutbox()
	}
}

// queueOut adds a datagram for to to the outbox. Each of the outbox's
// places keeps its one-entry Buffers across sends, so that queuing a
// datagram allocates nothing.
func (e *engine) queueOut(buf []byte, to net.Addr) {
	n := len(e.outbox)
	if n < cap(e.outbox) {
		e.outbox = e.outbox[:n+1]
	} else {
		e.outbox = append(e.outbox, ipv4.Message{})
	}
	m := &e.outbox[n]
	if cap(m.Buffers) == 0 {
		m.Buffers = make([][]byte, 1)
	}
	m.Buffers = m.Buffers[:1]
	m.Buffers[0] = buf
	m.Addr = to
}

// sendOutbox sends the queued data datagrams in one batch.
func (e *engine) sendOutbox() {
	if len(e.outbox) == 0 {
		return
	}
	e.s.sendBatch(e.outbox)
	for i := range e.outbox {
		bufs := e.outbox[i].Buffers
		if len(e.spareBufs) < 512 {
			e.spareBufs = append(e.spareBufs, bufs[0])
		}
		bufs[0] = nil
		e.outbox[i] = ipv4.Message{Buffers: bufs[:0]}
	}
	e.outbox = e.outbox[:0]
}

// flush sends every partly filled datagram.
func (e *engine) flush() {
	e.sendGroupDiff()
	for _, st := range e.dirty {
		e.flushStream(st)
	}
	e.dirty = e.dirty[:0]
	e.sendOutbox()
	for _, l := range e.direct {
		l.flush()
	}
}

// --- receiving --------------------------------------------------------

func (e *engine) onData(p *packet) {
	if e.deaf {
		e.s.ctr.injected.Add(1)
		return
	}
	if e.region == nil || p.hdr.Region != e.region.ID {
		e.s.ctr.foreignRegion.Add(1)
		return
	}
	if p.hdr.Sender == e.s.id {
		return // my own multicast, looped back
	}
	if p.from.IsValid() && !e.nodeAddrs[p.from] {
		// Senders and the nodes that forward their messages are all in
		// the view: this one borrows a node's id.
		e.s.ctr.foreignRegion.Add(1)
		return
	}
	d := p.data
	rs := e.recvs[p.hdr.Sender]
	if e.view.node(p.hdr.Sender) == nil && (rs == nil || rs.orphanAt.IsZero() || d.StreamEpoch != rs.streamEpoch) {
		// Not a node of the view: forged or stale (but a survivor may
		// repair another with messages of a sender that failed).
		e.s.ctr.foreignRegion.Add(1)
		return
	}
	if rs != nil && d.StreamEpoch != rs.streamEpoch {
		if d.StreamEpoch < rs.streamEpoch {
			e.s.ctr.staleToken.Add(1)
			return
		}
		rs.drop() // the sender started a new stream into the region
		rs = nil
	}
	if rs == nil {
		rs = &recvStream{sender: p.hdr.Sender, streamEpoch: d.StreamEpoch}
		e.recvs[p.hdr.Sender] = rs
	}
	if !rs.started {
		var start uint64
		switch {
		case e.joinEpoch <= d.StreamEpoch:
			start = 1
		case p.hdr.Epoch >= e.joinEpoch:
			start = d.EpochStart
			// A datagram of a later epoch: start where the epoch I
			// entered in began, when the sender still lists it.
			for _, es := range d.Starts {
				if es.Epoch >= e.joinEpoch {
					start = min(start, es.Start)
					break
				}
			}
		default:
			return // sent before I joined the region
		}
		if start == 0 {
			// A repair forwarded by a node that does not know where the
			// epoch began: start on a datagram that says.
			return
		}
		rs.started, rs.next, rs.keptBase, rs.hi = true, start, start, start-1
		rs.pending = pendingRing{base: start}
		if start > 1 {
			rs.lastStable = start - 1
		}
	}
	if d.Flags&dataFlagRepair == 0 {
		rs.epochStart = d.EpochStart
	}
	if e.lose != nil {
		// A datagram left with no message is lost whole, and so is a
		// sender's announcement of a seq the test loses: their Hi is not
		// seen either.
		if len(d.Msgs) == 0 {
			if e.lose(p.hdr.Sender, d.StreamEpoch, d.Hi) {
				return
			}
		} else if d.Msgs = slices.DeleteFunc(d.Msgs, func(m message) bool { return e.lose(p.hdr.Sender, d.StreamEpoch, m.Seq) }); len(d.Msgs) == 0 {
			return
		}
	}
	if len(d.Msgs) > 0 && e.congested() {
		e.s.ctr.slowConsumer.Add(1)
		return
	}
	now := p.at
	if now.IsZero() {
		now = time.Now()
	}
	rs.lastData = now
	newHi := d.Hi
	if n := len(d.Msgs); n > 0 && d.Msgs[n-1].Seq > newHi {
		newHi = d.Msgs[n-1].Seq
	}
	// Nothing at or beyond limit is taken (see recvAhead).
	limit := satAdd(rs.next, e.recvAhead())
	newHi = min(newHi, limit-1)
	if newHi > rs.hi {
		// Note the seqs this datagram reveals as missing, to time repairs.
		j := 0
		at, gapLimit := monoOf(now), satAdd(rs.next, maxGapAhead)
		for x := max(rs.hi+1, rs.next); x <= newHi && x < gapLimit; x++ {
			for j < len(d.Msgs) && d.Msgs[j].Seq < x {
				j++
			}
			if j < len(d.Msgs) && d.Msgs[j].Seq == x {
				continue
			}
			rs.pending.noteGap(x, at, gapLimit)
		}
		rs.hi = newHi
	}
	for i := range d.Msgs {
		m := &d.Msgs[i]
		if m.Seq < rs.next || rs.pending.get(m.Seq) != nil {
			e.s.ctr.duplicates.Add(1)
			continue
		}
		if m.Seq >= limit {
			e.s.ctr.overload.Add(1) // comes again by repair once the stream gets there
			continue
		}
		if m.Seq == rs.next && rs.pending.n == 0 {
			if at := rs.pending.takeGap(m.Seq); at != 0 {
				e.s.repair.add(time.Duration(monoOf(now) - at))
			}
			e.deliverNext(rs, m) // in order: no need to queue it
			continue
		}
		m.held = true
		if at := rs.pending.put(m.Seq, m); at != 0 {
			e.s.repair.add(time.Duration(monoOf(now) - at))
		}
	}
	e.deliverReady(rs)
}

func (e *engine) deliverReady(rs *recvStream) {
	for {
		m := rs.pending.take()
		if m == nil {
			return
		}
		e.deliverNext(rs, m)
	}
}

// deliverNext delivers m, the message of seq rs.next, and keeps it for
// forwarding.
func (e *engine) deliverNext(rs *recvStream, m *message) {
	m.held = true
	rs.next++
	if rs.pending.base < rs.next {
		rs.pending.advance(rs.next)
	}
	if len(rs.kept) == cap(rs.kept) {
		rs.roomToKeep()
	}
	rs.kept = append(rs.kept, m)
	if len(rs.kept) > 4*e.s.cfg.Window {
		rs.free(rs.keptBase + uint64(len(rs.kept)-2*e.s.cfg.Window))
	}
	if m.Flags&msgFlagMore != 0 {
		rs.frag = append(rs.frag, m.Data...)
		return
	}
	data, blk := m.Data, m.blk
	if len(rs.frag) > 0 {
		data, blk = append(rs.frag, m.Data...), nil
		rs.frag = nil
	}
	g, ok := e.fresh(rs, m)
	if !ok {
		e.s.ctr.duplicates.Add(1)
		return
	}
	if g != nil {
		e.deliverLocal(g, rs.sender, m.Source, m.GSeq, data, blk)
	}
}

// fresh reports whether an event received from sender is to be delivered,
// and notes it as delivered: each publishing membership numbers its events
// (GSeq) 1, 2, 3..., and an event at or below the last one delivered from
// it is a copy that a handover brought again. A handed-over copy of a
// group this node did not carry across its last change of region is an
// event published before this node joined the group: it is noted but not
// delivered. It returns the local group to deliver to, nil when the
// group has no local member.
func (e *engine) fresh(rs *recvStream, m *message) (*localGroup, bool) {
	tab := rs.sources
	if tab == nil {
		tab = e.lastGSeq[rs.sender]
		if tab == nil {
			tab = &sourceTable{}
			e.lastGSeq[rs.sender] = tab
		}
		rs.sources = tab
	}
	sl := tab.find(m.Source)
	var g *localGroup
	if sl != nil && sl.group == m.Group {
		g = sl.g // find drops the entries of a group that went
	} else {
		g = e.groups[m.Group]
	}
	if g == nil {
		return nil, true // no local member
	}
	if sl != nil && m.GSeq <= sl.gseq {
		return nil, false
	}
	if sl == nil {
		if sl = tab.add(m.Source); sl == nil {
			// No room to note it, so no way to tell its copies: the
			// event is not delivered.
			e.s.ctr.sourcesRefused.Add(1)
			return nil, true
		}
	}
	*sl = sourceLast{group: m.Group, gseq: m.GSeq, g: g}
	return g, m.Flags&msgFlagHandover == 0 || e.carried[m.Group]
}

// handoverPlan is a handover decided at a view change: the unstable
// messages of from, of the groups of to, go again into to's stream.
type handoverPlan struct {
	to   *Region
	from []*sendStream
}

// planHandovers finds, as a sender, the nodes that moved from one region
// to another between the views prev and v, and for each region they moved
// into, the streams into the regions they came from that hold unstable
// messages. It runs before the send streams follow v (which drops those
// of regions that are gone).
func (e *engine) planHandovers(prev, v *View) []handoverPlan {
	if prev.Number == 0 || len(e.sends) == 0 {
		return nil
	}
	was := make(map[uint64]uint64, len(prev.Nodes)) // node -> region id in prev
	for i := range prev.Regions {
		for _, id := range prev.Regions[i].Members {
			was[id] = prev.Regions[i].ID
		}
	}
	var plans []handoverPlan
	for i := range v.Regions {
		r := &v.Regions[i]
		if r.Epoch != v.Number || (len(r.Members) == 1 && r.Members[0] == e.s.id) {
			continue // no node entered it in v, or it is mine alone
		}
		var from []*sendStream
		for _, id := range r.Members {
			old, ok := was[id]
			if id == e.s.id || !ok || old == r.ID {
				continue
			}
			if st := e.sends[old]; st != nil && st.unstable() > 0 && !slices.Contains(from, st) {
				from = append(from, st)
			}
		}
		if len(from) > 0 {
			plans = append(plans, handoverPlan{to: r, from: from})
		}
	}
	return plans
}

// handover sends the unstable events of p.from whose groups region p.to
// carries again into p.to's stream, once each, in the order this node
// published them, marked msgFlagHandover. A node that moved into p.to
// keeping a group holds a prefix of its old region's stream that reaches
// at least that stream's stable point (every member of the old region,
// itself included, held it), so the copies take it on from where it was
// without a gap; fresh drops what it already delivered. The stream into
// p.to has just started a new epoch, so the copies come first in it and
// a node entering p.to in this view starts right before them.
func (e *engine) handover(p handoverPlan) {
	type key struct {
		source uint32
		gseq   uint64
	}
	seen := map[key]bool{}
	var evs []*outMsg
	for _, f := range p.from {
		for _, om := range f.buf {
			if om == nil || om.event == nil {
				continue
			}
			if _, ok := slices.BinarySearch(p.to.Groups, om.Group); !ok {
				continue
			}
			k := key{om.Source, om.GSeq}
			if seen[k] {
				continue
			}
			seen[k] = true
			evs = append(evs, om)
		}
	}
	if len(evs) == 0 {
		return
	}
	slices.SortStableFunc(evs, func(a, b *outMsg) int { return cmp.Compare(a.pub, b.pub) })
	st := e.sends[p.to.ID]
	if st == nil {
		st = &sendStream{region: p.to.ID, streamEpoch: p.to.Epoch, epoch: p.to.Epoch, epochStart: 1, next: 1}
		e.sends[p.to.ID] = st
	}
	st.dst = netip.AddrPortFrom(p.to.Addr, uint16(e.s.cfg.Port))
	st.members = p.to.Members
	n := 0
	for _, om := range evs {
		hdr := message{Group: om.Group, Source: om.Source, GSeq: om.GSeq, Flags: msgFlagHandover}
		n += e.appendEvent(st, hdr, om.pub, om.event, om.blk)
	}
	e.s.ctr.handovers.Add(uint64(n))
	e.s.ctr.sent.Add(uint64(n))
	if e.s.cfg.Rate > 0 {
		e.allowance -= float64(n) // new publishes wait for the copies' share of the rate
	}
}

// --- coordinator sessions ---------------------------------------------

// keepForSession keeps, when the coordinator session ends, what the next
// one needs to lose nothing: the unstable messages of every send stream
// (sent again into the new streams) and the groups this node has members
// in (whose handed-over messages it takes).
func (e *engine) keepForSession() {
	for _, st := range e.sends {
		for _, om := range st.buf {
			if om != nil && om.event != nil {
				e.carryOver = append(e.carryOver, om)
			}
		}
	}
	e.carryUntil = time.Now().Add(time.Minute)
	e.sessionGroups = make(map[uint64]bool, len(e.groups))
	e.awaited = map[uint64]map[uint64]bool{}
	for id := range e.groups {
		e.sessionGroups[id] = true
		for _, r := range e.view.regionsOfGroup(id) {
			for _, m := range r.Members {
				if m != e.s.id {
					if e.awaited[id] == nil {
						e.awaited[id] = map[uint64]bool{}
					}
					e.awaited[id][m] = true
				}
			}
		}
	}
}

// sessionWait bounds how long publishes wait, after a coordinator
// session begins, for the nodes that had their groups in the last one:
// services reconnect with a backoff of up to two seconds, and a node that
// is not back by then is taken for gone.
func (e *engine) sessionWait() time.Duration {
	return max(5*time.Second, 2*e.s.cfg.FailureTimeout())
}

// awaitBack strikes the nodes back in v from the awaited ones and
// returns them.
func (e *engine) awaitBack(v *View) map[uint64]bool {
	var back map[uint64]bool
	for g, nodes := range e.awaited {
		for _, r := range v.regionsOfGroup(g) {
			for _, m := range r.Members {
				if nodes[m] {
					delete(nodes, m)
					if back == nil {
						back = map[uint64]bool{}
					}
					back[m] = true
				}
			}
		}
		if len(nodes) == 0 {
			delete(e.awaited, g)
		}
	}
	return back
}

// handOverSession sends the messages kept from the last session into
// each region of v that holds nodes just back (awaitBack): nodes come back
// into their regions one view at a time as their services reconnect to
// the coordinator. Once every node is back, or at carryUntil, the session
// is over.
func (e *engine) handOverSession(v *View, back map[uint64]bool) {
	if len(e.carryOver) > 0 && len(back) > 0 {
		old := &sendStream{buf: e.carryOver}
		for i := range v.Regions {
			r := &v.Regions[i]
			if slices.ContainsFunc(r.Members, func(m uint64) bool { return back[m] }) {
				e.handover(handoverPlan{to: r, from: []*sendStream{old}})
			}
		}
	}
	e.endSessionCarry(time.Now())
}

// endSessionCarry forgets what keepForSession kept once every node is back
// or carryUntil has passed.
func (e *engine) endSessionCarry(now time.Time) {
	if e.awaited != nil && (len(e.awaited) == 0 || now.After(e.carryUntil)) {
		e.carryOver, e.awaited = nil, nil
	}
}

// --- failed senders ---------------------------------------------------

// orphanGrace is how long the stream of a sender that left the view stays
// in the tokens at least, for the survivors to repair each other, before
// it is settled: a hundred token rounds, and at least a second.
func (e *engine) orphanGrace() time.Duration { return max(100*e.tick, time.Second) }

// orphanQuiet is how long no message of an orphan stream may have come
// before it is settled: while survivors still repair each other, it waits.
func (e *engine) orphanQuiet() time.Duration { return max(20*e.tick, 200*time.Millisecond) }

// settleOrphan delivers, in order, what this node holds of the stream of
// a sender that left the view, and forgets the stream. By now the
// survivors hold the same messages (each forwarded what others lacked),
// so they deliver the same events: a gap that no survivor could fill is
// skipped, and after a gap the messages up to the end of an event are
// dropped (the head of that event may be what is missing).
func (e *engine) settleOrphan(rs *recvStream) {
	type held struct {
		seq uint64
		m   *message
	}
	var seqs []held
	rs.pending.each(func(seq uint64, m *message) { seqs = append(seqs, held{seq, m}) })
	skipping := false
	for _, h := range seqs {
		seq, m := h.seq, h.m
		if seq > rs.next {
			e.s.ctr.orphanLost.Add(seq - rs.next)
			rs.frag = nil
			skipping = true
		}
		rs.next = seq
		if skipping {
			rs.next++
			e.s.ctr.orphanLost.Add(1)
			skipping = m.Flags&msgFlagMore != 0
			m.release()
			continue
		}
		e.deliverNext(rs, m)
	}
	rs.drop()
	e.log.Info("settled the stream of a sender that left the view", "sender", strconv.FormatUint(rs.sender, 16),
		"delivered_to", rs.next-1, "held_beyond_gaps", len(seqs))
	delete(e.recvs, rs.sender)
	delete(e.lastGSeq, rs.sender)
	delete(e.prevStable, rs.sender)
	delete(e.regionStable, rs.sender)
	delete(e.partSummary, rs.sender)
}

// --- views ------------------------------------------------------------

func (e *engine) installView(v *View) {
	if v.Number <= e.view.Number && !e.newSession {
		return
	}
	restart := e.newSession && e.ready // the first view of a later session
	e.newSession = false
	plans := e.planHandovers(e.view, v)
	e.view = v
	e.nodeAddrs = make(map[netip.AddrPort]bool, len(v.Nodes))
	for _, n := range v.Nodes {
		e.nodeAddrs[n.Addr] = true
	}
	e.targets = map[uint64][]*sendStream{}
	e.targetsGen++
	e.s.ctr.view.Store(v.Number)
	r := v.regionOf(e.s.id)
	old := e.region
	if r == nil || old == nil || old.ID != r.ID {
		// I moved to another region (or left all groups): streams into
		// the old one are of no use any more.
		e.dropRecvs()
		e.prevStable = map[uint64]uint64{}
		e.prevLack = nil
		e.partSummary = map[uint64]*streamSummary{}
		e.regionStable = map[uint64]uint64{}
		e.seenRound = [2]uint64{}
		e.inRound = [2]bool{}
		e.lastToken = nil
		e.lastRegion = nil
		// The groups I keep across the move: senders hand their
		// unstable messages of these over into my new region.
		e.carried = nil
		if r != nil {
			e.joinEpoch = r.Epoch
			if restart {
				// A new session: the groups I had before it are kept.
				for _, g := range r.Groups {
					if e.sessionGroups[g] {
						if e.carried == nil {
							e.carried = map[uint64]bool{}
						}
						e.carried[g] = true
					}
				}
			} else if old != nil {
				for _, g := range r.Groups {
					if _, ok := slices.BinarySearch(old.Groups, g); ok {
						if e.carried == nil {
							e.carried = map[uint64]bool{}
						}
						e.carried[g] = true
					}
				}
			}
		}
	}
	var want netip.Addr
	if r != nil {
		rc := *r
		e.region = &rc
		e.parts = partitions(rc.Members, e.s.cfg.PartitionSize)
		if old == nil || old.Epoch != rc.Epoch {
			// New rings (perhaps with other leaders, who number their
			// rounds afresh): tokens of the old ones mean nothing now.
			e.lastToken = nil
			e.lastRegion = nil
			e.inRound = [2]bool{}
			e.seenRound = [2]uint64{}
			e.prevLack = nil
		}
		for pi, p := range e.parts {
			if i := slices.Index(p, e.s.id); i >= 0 {
				e.myPart, e.myIdx = pi, i
			}
		}
		want = r.Addr
		e.s.ctr.region.Store(r.ID)
	} else {
		e.region = nil
		e.parts = nil
		e.s.ctr.region.Store(0)
	}
	if want != e.mcast {
		if e.mcast.IsValid() {
			e.s.leaveGroup(e.mcast)
		}
		if want.IsValid() {
			if err := e.s.joinGroup(want); err != nil {
				e.log.Error("cannot join multicast group", "group", want.String(), "err", err)
			}
		}
		e.mcast = want
	}
	// Senders that left the view: nothing more will come from them, but
	// the survivors may hold messages of theirs that others lack. Their
	// streams stay in the tokens for a while (orphans), so that the
	// survivors repair each other, and are then settled (settleOrphan).
	now := time.Now()
	for id, rs := range e.recvs {
		switch {
		case v.node(id) != nil:
			rs.orphanAt = time.Time{} // back, or never gone
		case !rs.started:
			delete(e.recvs, id)
		case rs.orphanAt.IsZero():
			rs.orphanAt = now
		}
	}
	for id := range e.lastGSeq {
		if v.node(id) == nil && e.recvs[id] == nil {
			delete(e.lastGSeq, id)
		}
	}
	// Send streams follow their regions' epochs.
	for id, st := range e.sends {
		var reg *Region
		for i := range v.Regions {
			if v.Regions[i].ID == id {
				reg = &v.Regions[i]
				break
			}
		}
		if reg == nil {
			delete(e.sends, id)
			continue
		}
		st.dst = netip.AddrPortFrom(reg.Addr, uint16(e.s.cfg.Port))
		st.members = reg.Members
		if reg.Epoch != st.epoch {
			e.flushStream(st)
			st.newEpoch(reg.Epoch)
		}
	}
	for _, p := range plans {
		e.handover(p)
	}
	if restart {
		e.awaitUntil = time.Now().Add(e.sessionWait())
	}
	e.handOverSession(v, e.awaitBack(v))
	e.s.gmsSend(gmsViewAck, binary.BigEndian.AppendUint64(nil, v.Number))
	e.checkUnjoined()
	// Each local group's nodes are the members of the group's regions,
	// which share no node: a sum over those regions of a hash of their
	// members identifies the set without building it, and only the
	// groups whose set changed have it built, sorted and sent.
	for _, g := range e.groups {
		g.nextKey = 0
	}
	for i := range v.Regions {
		r := &v.Regions[i]
		var h uint64
		for _, id := range r.Members {
			h += mix64(id)
		}
		for _, gid := range r.Groups {
			if g := e.groups[gid]; g != nil {
				g.nextKey += h
			}
		}
	}
	for _, g := range e.groups {
		// The constant tells an empty set from a group not yet told.
		key := g.nextKey ^ 0x9e3779b97f4a7c15
		if key == g.viewKey {
			continue
		}
		g.viewKey = key
		var ids []uint64
		for _, m := range g.members {
			if m.joined {
				if ids == nil {
					ids = e.groupNodes(g.id)
				}
				e.sendGroupView(m, ids)
			}
		}
	}
	if !e.ready {
		e.ready = true
		close(e.s.gmsDone)
	}
	e.admit()
}

// --- tick -------------------------------------------------------------

func (e *engine) onTick(now time.Time) {
	e.flush()
	var unstable uint64
	for _, st := range e.sends {
		unstable += uint64(st.unstable())
		if st.unstable() > 0 && now.Sub(st.lastSend) >= e.tick {
			// Announce the stream's end so that receivers who lost its
			// tail learn of it.
			d := st.body(0)
			st.b.begin(dgHeader{Type: dgData, Sender: e.s.id, Region: st.region, Epoch: st.epoch}, &d, st.dst, e.mtu())
			e.s.send(st.b.finish(st.next-1, e.auth), st.dst)
			st.lastSend = now
		}
	}
	e.s.ctr.unstable.Store(unstable)
	e.endSessionCarry(now)
	var kept uint64
	for _, rs := range e.recvs {
		kept += uint64(len(rs.kept) + rs.pending.n)
		if rs.orphanAt.IsZero() {
			continue
		}
		// Settle once the orphan time is over and repairs have stopped
		// coming (or, at the latest, after a minute).
		since := now.Sub(rs.orphanAt)
		if since >= e.orphanGrace() && now.Sub(rs.lastData) >= e.orphanQuiet() || since >= time.Minute {
			e.settleOrphan(rs)
		}
	}
	e.s.ctr.kept.Store(kept)
	if e.region != nil {
		if e.myIdx == 0 {
			e.startRound(levelPartition, now)
			if e.myPart == 0 && len(e.parts) > 1 {
				e.startRound(levelRegion, now)
			}
		}
	}
	e.admit()
}
