package relay

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// event is one event in a channel's log. Its frame is encoded once and
// written to every member as is.
type event struct {
	seq     uint64
	client  string // publishing client's id (for deduplication)
	counter uint64 // the client's publish counter
	sender  string
	frame   []byte // the whole tEvent frame
	tailOff int    // where the fields after the channel name start in frame
	dataOff int    // where the payload starts in frame
}

// Event frames and records are carved from blocks of these sizes: one
// allocation serves many events, and consecutive events lie next to each
// other in memory so a writer sends a run of them with one write.
const (
	evSlabSize = 256 << 10
	evRecBlock = 256
)

// newEventLocked builds the event and its frame. Frames are immutable once
// built; their capacity may run on into the block (see member.fill).
func (ch *channel) newEventLocked(seq uint64, sender string, data []byte) *event {
	channel := ch.info.Name
	n := 4 + 1 + uvarintLen(len(channel)) + len(channel) + 8 + uvarintLen(len(sender)) + len(sender) + uvarintLen(len(data)) + len(data)
	var b, block []byte
	if n > evSlabSize/8 {
		b = make([]byte, 0, n)
	} else {
		if cap(ch.slab)-len(ch.slab) < n {
			ch.slab = make([]byte, 0, evSlabSize)
		}
		off := len(ch.slab)
		ch.slab = ch.slab[:off+n]
		b, block = ch.slab[off:off:off+n], ch.slab[off:]
	}
	b, off := beginFrame(b, tEvent)
	b = putStr(b, channel)
	tailOff := len(b)
	b = putU64(b, seq)
	b = putStr(b, sender)
	b = binary.AppendUvarint(b, uint64(len(data)))
	dataOff := len(b)
	b = append(b, data...)
	b = endFrame(b, off)
	if len(b) == n && block != nil {
		b = block[:n] // capacity to the end of the block, for appendRun
	}
	if len(ch.recs) == 0 {
		ch.recs = make([]event, evRecBlock)
	}
	ev := &ch.recs[0]
	ch.recs = ch.recs[1:]
	*ev = event{seq: seq, sender: sender, frame: b, tailOff: tailOff, dataOff: dataOff}
	return ev
}

func (ev *event) data() []byte { return ev.frame[ev.dataOff:] }

// channel is one channel at the server: its order, log, checkpoint and
// members.
type channel struct {
	s *Server

	mu        sync.Mutex // protects every field below
	info      transport.ChannelInfo
	lastSeq   uint64 // last assigned sequence number
	committed uint64 // last sequence number that may be delivered (on disk when durable)
	base      uint64 // log holds base+1..lastSeq
	log       []*event
	logBytes  int64
	cpSeq     uint64 // the stored checkpoint is the state after cpSeq
	cp        []byte
	members   map[*member]struct{}
	waiting   []*member  // members waiting for a checkpoint
	req       *cpRequest // the outstanding checkpoint request
	sinceCP   int        // events since the stored checkpoint
	sinceCPB  int64      // bytes since the stored checkpoint
	removed   bool
	mlist     []*member // members as a slice, copied on change (commitLocked ranges over it)
	slab      []byte    // block that event frames are carved from
	recs      []event   // block that event records are carved from
}

// cpRequest is a checkpoint request sent to one member.
type cpRequest struct {
	id         uint64
	donor      *member
	timer      *time.Timer
	tried      map[*member]bool
	compaction bool
}

// member is one connection's membership in a channel, at the server.
type member struct {
	c   *sconn
	ch  *channel
	key string // the channel's name or ID, as this member joined it: every frame to it uses this key

	// Guarded by ch.mu:
	cursor   uint64 // next sequence number to send
	synced   bool   // events flow (cursor valid)
	fresh    bool   // waiting for its first state: any checkpoint will do
	floor    uint64 // waiting: the state must be at or after floor
	behind   bool   // waiting because it fell behind
	xfer     *xfer  // state to send before any further event
	stateGen uint64 // tState transfers completed or started
	left     bool
	pubOnly  bool // publishes only: never synced, never a donor
}

// xfer is a checkpoint being sent to one member in chunks.
type xfer struct {
	seq   uint64
	data  []byte
	off   int
	flags byte
}

func newChannel(s *Server, info transport.ChannelInfo) *channel {
	info.Members = -1
	return &channel{s: s, info: info, members: map[*member]struct{}{}}
}

// appendLocked adds ev at the end of the log.
func (ch *channel) appendLocked(ev *event) {
	ch.lastSeq = ev.seq
	ch.log = append(ch.log, ev)
	ch.logBytes += int64(len(ev.frame))
	ch.sinceCP++
	ch.sinceCPB += int64(len(ev.frame))
}

// commitLocked makes events up to seq deliverable: members are woken,
// laggards fall behind, compaction is started when due.
func (ch *channel) commitLocked(seq uint64) {
	if seq <= ch.committed {
		return
	}
	ch.committed = seq
	limit := uint64(ch.s.cfg.MemberQueue)
	for _, m := range ch.mlist {
		if !m.synced || m.xfer != nil {
			continue
		}
		if ch.committed-(m.cursor-1) > limit {
			ch.s.log.Warn("relay: member fell behind; catching it up by state transfer",
				"channel", ch.info.Name, "client", m.c.name, "lag", ch.committed-(m.cursor-1))
			ch.needStateLocked(m, m.cursor-1, false, true)
			continue
		}
		m.c.signal()
	}
	if (ch.sinceCP >= ch.s.cfg.CompactEvents || ch.sinceCPB >= ch.s.cfg.CompactBytes) && ch.req == nil {
		ch.askDonorLocked(true, nil)
	}
	ch.enforceCapLocked()
}

// enforceCapLocked trims the oldest events when the log grew past
// MaxLogBytes (no member could give a checkpoint).
func (ch *channel) enforceCapLocked() {
	if ch.logBytes <= ch.s.cfg.MaxLogBytes {
		return
	}
	// Keep the newest half of the cap.
	var drop int
	var bytes int64
	for drop < len(ch.log) && ch.logBytes-bytes > ch.s.cfg.MaxLogBytes/2 && ch.log[drop].seq <= ch.committed {
		bytes += int64(len(ch.log[drop].frame))
		drop++
	}
	if drop == 0 {
		return
	}
	newBase := ch.log[drop-1].seq
	ch.s.log.Warn("relay: channel log over its limit and no member gave a checkpoint; trimming oldest events",
		"channel", ch.info.Name, "through", newBase, "bytes", bytes,
		"note", "joiners need a member online to get the state")
	ch.trimMemLocked(newBase)
	if ch.s.com != nil {
		ch.s.com.add(citem{op: opTrim, ch: ch, seq: newBase})
	}
}

// trimMemLocked drops events up to seq from the in-memory log.
func (ch *channel) trimMemLocked(seq uint64) {
	if seq <= ch.base {
		return
	}
	n := int(min(seq, ch.lastSeq) - ch.base)
	for i := 0; i < n; i++ {
		ch.logBytes -= int64(len(ch.log[i].frame))
		ch.log[i] = nil
	}
	ch.log = ch.log[n:]
	if cap(ch.log) > 1024 && len(ch.log) < cap(ch.log)/4 {
		ch.log = append([]*event(nil), ch.log...)
	}
	ch.base += uint64(n)
	// Members whose next event is gone must catch up by state transfer.
	// Members still receiving a state are caught by member.fill once it
	// is sent.
	for m := range ch.members {
		if m.synced && m.xfer == nil && m.cursor <= ch.base {
			ch.needStateLocked(m, m.cursor-1, false, true)
		}
	}
}

// events returns up to n events starting at seq (committed ones only).
func (ch *channel) eventsLocked(seq uint64, n int) []*event {
	if seq <= ch.base || seq > ch.committed {
		return nil
	}
	i := int(seq - ch.base - 1)
	j := min(i+n, int(ch.committed-ch.base))
	return ch.log[i:j]
}

// needStateLocked stops events to m until it has a state at or after
// floor (any state when fresh).
func (ch *channel) needStateLocked(m *member, floor uint64, fresh, behind bool) {
	m.synced = false
	m.xfer = nil
	m.fresh, m.floor, m.behind = fresh, floor, behind
	ch.waiting = append(ch.waiting, m)
	if r := ch.req; r != nil && r.donor == m {
		// m was asked for a checkpoint and now needs one itself: it will
		// not answer in time; ask someone else.
		r.timer.Stop()
		ch.retryLocked(r)
		return
	}
	if ch.req == nil {
		ch.askDonorLocked(false, nil)
	}
	// An outstanding request (compaction or join) serves m too.
}

// askDonorLocked sends a checkpoint request to the next member that can
// give one, or, when none can, serves the waiting members from the stored
// checkpoint and the log.
func (ch *channel) askDonorLocked(compaction bool, tried map[*member]bool) {
	if tried == nil {
		tried = map[*member]bool{}
	}
	// Ask the most up-to-date member: a laggard would answer late, with an
	// old state.
	var donor *member
	for m := range ch.members {
		if m.synced && m.xfer == nil && !m.left && !tried[m] && (donor == nil || m.cursor > donor.cursor) {
			donor = m
		}
	}
	if donor == nil {
		if len(ch.waiting) > 0 {
			ch.serveFromStoreLocked()
		}
		if compaction {
			// Nobody can checkpoint now; try again after as many events.
			ch.sinceCP, ch.sinceCPB = 0, 0
		}
		return
	}
	id := ch.s.cpIDs.Add(1)
	ch.s.log.Debug("relay: asking for a checkpoint", "channel", ch.info.Name, "client", donor.c.name, "id", id, "compaction", compaction, "waiting", len(ch.waiting))
	r := &cpRequest{id: id, donor: donor, tried: tried, compaction: compaction}
	ch.req = r
	r.timer = time.AfterFunc(ch.s.cfg.CheckpointTimeout, func() { ch.reqTimeout(id) })
	donor.c.sendCkptReq(ch, donor.key, id)
}

// awaits reports whether the channel waits for checkpoint id from c.
func (ch *channel) awaits(c *sconn, id uint64) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	r := ch.req
	return r != nil && r.id == id && r.donor.c == c
}

func (ch *channel) reqTimeout(id uint64) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	r := ch.req
	if r == nil || r.id != id {
		return
	}
	ch.s.log.Warn("relay: member did not answer a checkpoint request in time; skipping it",
		"channel", ch.info.Name, "client", r.donor.c.name, "timeout", ch.s.cfg.CheckpointTimeout)
	ch.retryLocked(r)
}

// retryLocked asks the next donor after r failed.
func (ch *channel) retryLocked(r *cpRequest) {
	ch.req = nil
	r.tried[r.donor] = true
	if len(ch.waiting) > 0 || r.compaction {
		ch.askDonorLocked(r.compaction, r.tried)
	}
}

// onCheckpoint handles a donor's answer (data nil and failed set when it
// had none to give).
func (ch *channel) onCheckpoint(from *sconn, id, seq uint64, data []byte, failed bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	r := ch.req
	if r == nil || r.id != id || r.donor.c != from {
		return // late or unknown: ignore
	}
	r.timer.Stop()
	ch.s.log.Debug("relay: checkpoint answer", "channel", ch.info.Name, "client", from.name, "id", id, "seq", seq, "bytes", len(data), "failed", failed)
	if failed || seq > ch.committed || seq < ch.base {
		if !failed {
			ch.s.log.Debug("relay: checkpoint unusable", "channel", ch.info.Name, "seq", seq, "base", ch.base, "committed", ch.committed)
		}
		ch.retryLocked(r)
		return
	}
	ch.req = nil
	if seq > ch.cpSeq {
		ch.setCheckpointLocked(seq, data)
	}
	waiting := ch.waiting
	ch.waiting = nil
	for _, m := range waiting {
		if m.left || m.synced {
			continue
		}
		switch {
		case m.fresh || seq >= m.floor:
			ch.startXferLocked(m, seq, data)
		default:
			ch.serveOneFromStoreLocked(m)
		}
	}
}

// setCheckpointLocked stores a newer checkpoint and compacts the log.
func (ch *channel) setCheckpointLocked(seq uint64, data []byte) {
	ch.cpSeq, ch.cp = seq, data
	ch.sinceCP, ch.sinceCPB = 0, 0
	for i := len(ch.log) - 1; i >= 0 && ch.log[i].seq > seq; i-- {
		ch.sinceCP++
		ch.sinceCPB += int64(len(ch.log[i].frame))
	}
	if ch.s.com != nil {
		ch.s.com.add(citem{op: opCP, ch: ch, seq: seq, data: data})
	}
	// Keep events members still need in memory; the disk keeps only the
	// tail after the checkpoint.
	trim := seq
	for m := range ch.members {
		if m.synced && m.cursor-1 < trim {
			trim = m.cursor - 1
		}
	}
	ch.trimMemLocked(trim)
}

func (ch *channel) serveFromStoreLocked() {
	waiting := ch.waiting
	ch.waiting = nil
	for _, m := range waiting {
		if !m.left && !m.synced {
			ch.serveOneFromStoreLocked(m)
		}
	}
}

// serveOneFromStoreLocked catches m up without a donor: from the log when
// it has everything after m's floor, else from the stored checkpoint.
func (ch *channel) serveOneFromStoreLocked(m *member) {
	switch {
	case !m.fresh && m.floor >= ch.base && m.floor <= ch.committed:
		m.stateGen++
		m.xfer = &xfer{seq: m.floor, flags: stateNone | chunkLast | behindFlag(m)}
		m.cursor = m.floor + 1
		m.synced = true
		m.c.signal()
	case ch.cpSeq >= ch.base && (m.fresh || ch.cpSeq >= m.floor):
		ch.startXferLocked(m, ch.cpSeq, ch.cp)
	default:
		ch.s.log.Warn("relay: joiner needs trimmed history and no member can give a checkpoint",
			"channel", ch.info.Name, "client", m.c.name, "base", ch.base, "checkpoint", ch.cpSeq)
		m.left = true
		ch.delMemberLocked(m)
		m.c.memberGone(m, errf(CodeTrimmed, "channel %q: history up to %d was trimmed and no member online could give a checkpoint; join again when a member is online", ch.info.Name, ch.base))
	}
}

func behindFlag(m *member) byte {
	if m.behind {
		return stateBehind
	}
	return 0
}

func (ch *channel) startXferLocked(m *member, seq uint64, data []byte) {
	ch.s.log.Debug("relay: sending state", "channel", ch.info.Name, "client", m.c.name, "seq", seq, "bytes", len(data), "behind", m.behind)
	m.stateGen++
	m.xfer = &xfer{seq: seq, data: data, flags: behindFlag(m)}
	m.cursor = seq + 1
	m.synced = true
	m.c.signal()
}

// addMemberLocked adds m to the channel's members.
func (ch *channel) addMemberLocked(m *member) {
	ch.members[m] = struct{}{}
	ch.mlist = append(ch.mlist[:len(ch.mlist):len(ch.mlist)], m)
}

// delMemberLocked drops m from the channel's members.
func (ch *channel) delMemberLocked(m *member) {
	delete(ch.members, m)
	list := make([]*member, 0, len(ch.members))
	for _, o := range ch.mlist {
		if o != m {
			list = append(list, o)
		}
	}
	ch.mlist = list
}

// removeMemberLocked takes m out of the channel.
func (ch *channel) removeMemberLocked(m *member) {
	if m.left {
		return
	}
	m.left = true
	ch.delMemberLocked(m)
	for i, w := range ch.waiting {
		if w == m {
			ch.waiting = append(ch.waiting[:i], ch.waiting[i+1:]...)
			break
		}
	}
	if r := ch.req; r != nil && r.donor == m {
		r.timer.Stop()
		ch.retryLocked(r)
	}
}
