package qsm

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

func errMalformedf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// maxForwardPerVisit caps the messages one node forwards per token visit,
// and maxForwardPerDest those it sends one node, so that a repair burst
// does not overflow the receiver's socket buffer; the rest follows in
// later rounds or from other nodes.
const (
	maxForwardPerVisit = 2048
	maxForwardPerDest  = 512
)

// ring returns the participants of a ring: the nodes of partition idx at
// level 0, the partition leaders at level 1.
func (e *engine) ring(level uint8, idx int) []uint64 {
	if level == levelPartition {
		if idx < 0 || idx >= len(e.parts) {
			return nil
		}
		return e.parts[idx]
	}
	leaders := make([]uint64, len(e.parts))
	for i, p := range e.parts {
		leaders[i] = p[0]
	}
	return leaders
}

// myPos returns my position in a ring of the given level, or -1.
func (e *engine) myPos(level uint8) int {
	if level == levelPartition {
		return e.myIdx
	}
	if e.myIdx != 0 {
		return -1
	}
	return e.myPart
}

// sentBy reports whether a datagram from the network came from the node
// its header names: a node of the view other than this one, at the
// address the view gives it (tokens and acks go out of that socket).
func (e *engine) sentBy(p *packet) bool {
	if p.hdr.Sender == e.s.id {
		return false
	}
	n := e.view.node(p.hdr.Sender)
	return n != nil && n.Addr == p.from
}

func (e *engine) addrOf(id uint64) (netip.AddrPort, bool) {
	n := e.view.node(id)
	if n == nil {
		return netip.AddrPort{}, false
	}
	return n.Addr, true
}

// startRound starts a new round of the ring this node leads at level.
func (e *engine) startRound(level uint8, now time.Time) {
	// One round at a time: a new one starts when the last came back, or
	// when it is overdue (its token was lost).
	if e.inRound[level] && now.Sub(e.roundAt[level]) < e.roundTimeout() {
		return
	}
	e.inRound[level] = true
	e.round[level]++
	e.roundAt[level] = now
	t := &tokenBody{Level: level, Round: e.round[level]}
	ring := e.ring(level, e.myPart)
	if level == levelPartition {
		t.Ring = uint16(e.myPart)
	}
	if level == levelPartition {
		// Carry on the streams the last round left unstable, with what
		// every node reported then, so that nodes early in the ring can
		// repair those after them; and tell the ring what it held in
		// common (what may be freed). A stream also goes on until the
		// ring has been told its latest stable point: the nodes free
		// their copies only then.
		if last := e.lastToken; last != nil {
			for _, en := range last.Streams {
				sum := e.partSummary[en.Sender]
				if sum != nil && (sum.minAck < sum.hi || en.Stable < e.ringStable(en.Sender)) && len(en.Slots) == len(ring) {
					t.Streams = append(t.Streams, en)
				}
			}
		}
		for sender, sum := range e.partSummary {
			if sum.minAck < sum.hi {
				entry(t, sender, len(ring))
			}
		}
		e.fill(t, level, 0, len(ring))
		for i := range t.Streams {
			en := &t.Streams[i]
			en.Stable = e.ringStable(en.Sender)
			// The leader filled its slot before it knew the stable
			// point; it frees now (a ring of one node has no other turn).
			if rs := e.recvs[en.Sender]; rs != nil && rs.started {
				rs.stable(en.Stable)
			}
		}
	} else {
		// Carry on the streams of senders that left the view with what
		// the last round learnt: the highest seq any partition holds, and
		// what each lacked, so that a leader early in the ring can hand
		// its messages to one after it, and the one after it knows what
		// it lacks.
		if last := e.lastRegion; last != nil {
			for _, en := range last.Streams {
				if e.view.node(en.Sender) == nil && e.recvs[en.Sender] != nil && len(en.Slots) == len(ring) {
					t.Streams = append(t.Streams, en)
				}
			}
		}
		e.fill(t, level, 0, len(ring))
		for i := range t.Streams {
			t.Streams[i].Stable = e.regionStable[t.Streams[i].Sender]
		}
	}
	if len(ring) == 1 {
		e.complete(t, level)
		e.inRound[level] = false
		return
	}
	e.passToken(t, ring[1])
}

// settled reports whether sender left the view and this node has settled
// its stream: tokens that still carry it (other nodes settle a little
// later) must not bring its state back.
func (e *engine) settled(sender uint64) bool {
	return e.view.node(sender) == nil && e.recvs[sender] == nil
}

// ringStable is the stable point a partition leader tells its ring for a
// stream: what every node of the partition held in the last round and,
// with more than one partition, what the whole region holds (other
// partitions may still need what this one has).
func (e *engine) ringStable(sender uint64) uint64 {
	st := e.prevStable[sender]
	if len(e.parts) > 1 {
		st = min(st, e.regionStable[sender])
	}
	return st
}

// roundTimeout is how long a leader waits for its token to come back
// before it starts another round: three times the recent round time,
// between one and four ticks.
func (e *engine) roundTimeout() time.Duration {
	return min(max(3*e.rtt, e.tick, 2*time.Millisecond), 4*e.tick)
}

// roundDone notes the time a round took.
func (e *engine) roundDone(level uint8) {
	e.inRound[level] = false
	d := time.Since(e.roundAt[level])
	if e.rtt == 0 {
		e.rtt = d
	} else {
		e.rtt = (4*e.rtt + d) / 5
	}
}

func (e *engine) passToken(t *tokenBody, to uint64) {
	addr, ok := e.addrOf(to)
	if !ok {
		return
	}
	h := dgHeader{Type: dgToken, Sender: e.s.id, Region: e.region.ID, Epoch: e.region.Epoch}
	b := sealedDatagram(h, t.append(nil), e.auth)
	for range tokenCopies {
		e.s.send(b, addr)
	}
	e.s.ctr.tokens.Add(1)
}

// tokenCopies is how many copies of a token each hop sends. A token lost
// on the way costs its ring a round timeout (up to four ticks) in which
// nothing is repaired; under loss p per datagram a ring of n nodes loses
// about n*p of its rounds, n*p^2 with two copies. The receiver takes the
// first copy and drops the second as stale.
const tokenCopies = 2

func (e *engine) onToken(p *packet) {
	t := p.token
	if e.region == nil || p.hdr.Region != e.region.ID || p.hdr.Epoch != e.region.Epoch {
		e.s.ctr.staleToken.Add(1)
		return
	}
	if _, ok := slices.BinarySearch(e.region.Members, p.hdr.Sender); !ok || p.from.IsValid() && !e.sentBy(p) {
		e.s.ctr.foreignRegion.Add(1)
		return
	}
	idx := int(t.Ring)
	if t.Level == levelRegion {
		idx = e.myPart
	} else if idx != e.myPart {
		e.s.ctr.staleToken.Add(1)
		return
	}
	ring := e.ring(t.Level, idx)
	pos := e.myPos(t.Level)
	if pos < 0 || len(ring) == 0 {
		e.s.ctr.staleToken.Add(1)
		return
	}
	if ring[(pos+len(ring)-1)%len(ring)] != p.hdr.Sender {
		// Each hop passes the token to the next node: a token from
		// another one is not of this ring (or made up, and its round
		// number would make the real ones look stale here).
		e.s.ctr.foreignRegion.Add(1)
		return
	}
	for i := range t.Streams {
		if len(t.Streams[i].Slots) != len(ring) {
			e.s.ctr.malformed.Add(1)
			return
		}
	}
	if pos == 0 {
		if t.Round <= e.backRound[t.Level] {
			e.s.ctr.staleToken.Add(1) // another copy of a token that came back
			return
		}
		e.backRound[t.Level] = t.Round
		if t.Round != e.round[t.Level] {
			// A round that came back late: too late to count, but the
			// leader can still repair what its predecessors lacked.
			e.s.ctr.staleToken.Add(1)
			if t.Level == levelPartition && t.Round < e.round[t.Level] && e.round[t.Level]-t.Round <= 2 {
				e.fill(t, t.Level, 0, len(ring))
			}
			return
		}
		e.fill(t, t.Level, 0, len(ring))
		e.complete(t, t.Level)
		e.roundDone(t.Level)
		return
	}
	if t.Round <= e.seenRound[t.Level] {
		e.s.ctr.staleToken.Add(1) // an older round, or another copy of this one
		return
	}
	e.seenRound[t.Level] = t.Round
	e.fill(t, t.Level, pos, len(ring))
	e.passToken(t, ring[(pos+1)%len(ring)])
}

// entry returns the token's entry for sender, adding it if there is room.
func entry(t *tokenBody, sender uint64, nslots int) *tokenStream {
	for i := range t.Streams {
		if t.Streams[i].Sender == sender {
			return &t.Streams[i]
		}
	}
	if len(t.Streams) >= maxTokenStreams {
		return nil
	}
	t.Streams = append(t.Streams, tokenStream{Sender: sender, Slots: make([]tokenSlot, nslots)})
	return &t.Streams[len(t.Streams)-1]
}

// active reports whether a received stream still needs the token.
func (rs *recvStream) active(now time.Time) bool {
	if !rs.started {
		return false
	}
	return rs.hi > rs.lastStable || rs.pending.n > 0 || now.Sub(rs.lastData) < time.Second
}

// fill writes this node's state into its slot of a token and, at level 0,
// forwards messages that other participants lack.
func (e *engine) fill(t *tokenBody, level uint8, pos, nslots int) {
	now := time.Now()
	if level == levelRegion {
		for sender, sum := range e.partSummary {
			if en := entry(t, sender, nslots); en != nil {
				en.Hi = max(en.Hi, sum.hi)
			}
		}
		for i := range t.Streams {
			en := &t.Streams[i]
			if pos != 0 && !e.settled(en.Sender) {
				e.regionStable[en.Sender] = en.Stable
			}
			sl := &en.Slots[pos]
			if sum := e.partSummary[en.Sender]; sum != nil {
				miss, hi := sum.missing, sum.hi
				if e.view.node(en.Sender) == nil && en.Hi > hi {
					// The sender left the view: nothing of its stream is
					// on its way, so what another partition holds and
					// this one has not seen is missing.
					miss = append(slices.Clip(miss), seqRange{hi + 1, en.Hi})
					hi = en.Hi
				}
				ms, upto := capRanges(miss, maxSlotRanges, hi)
				*sl = tokenSlot{State: slotStarted, Ack: sum.minAck, Upto: upto, Missing: ms}
			} else if st, ok := e.prevStable[en.Sender]; ok {
				*sl = tokenSlot{State: slotStarted, Ack: st, Upto: st}
			} else {
				*sl = tokenSlot{State: slotUnstarted}
			}
		}
		// What a whole partition lacks and this leader holds goes to that
		// partition's leader, which spreads it in its own ring: the
		// sender is asked only for what no leader could forward.
		leaders := e.ring(levelRegion, 0)
		budget := maxForwardPerVisit
		for i := range t.Streams {
			en := &t.Streams[i]
			if en.Sender == e.s.id {
				if own := e.sends[e.region.ID]; own != nil && !e.mute {
					lo, hi := own.held()
					budget = e.forward(leaders, en, pos, budget, own.message, lo, hi, own.streamEpoch, own.epochStart)
				}
			} else if rs := e.recvs[en.Sender]; rs != nil && rs.started {
				lo, hi := rs.held(e.recvAhead())
				budget = e.forward(leaders, en, pos, budget, rs.get, lo, hi, rs.streamEpoch, rs.epochStart)
			}
		}
		e.sendOutbox()
		return
	}
	for sender, rs := range e.recvs {
		if rs.active(now) || !rs.orphanAt.IsZero() {
			entry(t, sender, nslots)
		}
	}
	if own := e.sends[e.region.ID]; own != nil && own.unstable() > 0 {
		entry(t, e.s.id, nslots)
	}
	budget := maxForwardPerVisit
	for i := range t.Streams {
		en := &t.Streams[i]
		sl := &en.Slots[pos]
		if en.Sender == e.s.id {
			own := e.sends[e.region.ID]
			if own == nil {
				*sl = tokenSlot{State: slotStarted, Ack: en.Hi, Upto: en.Hi}
				continue
			}
			en.Hi = max(en.Hi, own.next-1)
			*sl = tokenSlot{State: slotStarted, Ack: own.next - 1, Upto: own.next - 1}
			if e.mute {
				continue
			}
			lo, hi := own.held()
			budget = e.forward(e.parts[e.myPart], en, pos, budget, own.message, lo, hi, own.streamEpoch, own.epochStart)
			continue
		}
		rs := e.recvs[en.Sender]
		if rs == nil || !rs.started {
			*sl = tokenSlot{State: slotUnstarted}
			continue
		}
		rs.stable(en.Stable)
		// Report gaps only below the highest seq this node has seen
		// itself: above it, messages may simply be on their way. Of a
		// sender that left the view nothing is on its way: what another
		// survivor has seen and this node has not is missing.
		en.Hi = max(en.Hi, rs.hi)
		hi := rs.hi
		if !rs.orphanAt.IsZero() {
			hi = en.Hi
		}
		ack := rs.next - 1
		var miss []seqRange
		if hi > ack {
			miss = rs.pending.missing(hi, maxSlotRanges)
		}
		ms, upto := capRanges(miss, maxSlotRanges, max(hi, ack))
		at, gapLimit := monoOf(now), satAdd(rs.next, maxGapAhead)
		rs.pending.noteMissing(ms, upto, at, gapLimit)
		*sl = tokenSlot{State: slotStarted, Ack: ack, Upto: upto, Missing: ms}
		lo, hi := rs.held(e.recvAhead())
		budget = e.forward(e.parts[e.myPart], en, pos, budget, rs.get, lo, hi, rs.streamEpoch, rs.epochStart)
	}
	// The repairs go out now, not at the end of the engine's batch.
	e.sendOutbox()
}

// forward queues for other participants of a ring (a partition's nodes,
// or the partitions' leaders) the messages of a stream they lack and this
// node holds, and removes them from their missing lists so that the nodes
// after this one do not send them too. get returns nothing outside
// [lo, hi]: only that part of a missing range is looked at, however large
// the range a slot claims (a token is a peer's word, and a range may reach
// 2^64-1).
func (e *engine) forward(ring []uint64, en *tokenStream, pos, budget int, get func(uint64) *message, lo, hi, streamEpoch, epochStart uint64) int {
	for j := range min(len(en.Slots), len(ring)) {
		if j == pos || budget <= 0 {
			continue
		}
		sl := &en.Slots[j]
		if sl.State != slotStarted || len(sl.Missing) == 0 {
			continue
		}
		addr, ok := e.addrOf(ring[j])
		if !ok {
			continue
		}
		var sent []seqRange
		e.fwd.n = 0
		quota := maxForwardPerDest
		d := dataBody{StreamEpoch: streamEpoch, EpochStart: epochStart, Hi: en.Hi, Flags: dataFlagRepair}
		h := dgHeader{Type: dgData, Sender: en.Sender, Region: e.region.ID, Epoch: e.region.Epoch}
		for _, r := range sl.Missing {
			from, to := max(r.From, lo), min(r.To, hi)
			if from > to {
				continue
			}
			for x := from; budget > 0 && quota > 0; x++ {
				if m := get(x); m != nil {
					if e.fwd.n == 0 {
						e.fwd.begin(h, &d, addr, e.mtu())
					} else if !e.fwd.fits(m) {
						e.queueRepair(&e.fwd, en.Hi, addr)
						e.fwd.begin(h, &d, addr, e.mtu())
					}
					e.fwd.add(m)
					budget--
					quota--
					e.s.ctr.forwarded.Add(1)
					sent = appendClamped(sent, seqRange{x, x}, 0, x)
				}
				if x == to {
					break // before x wraps around at 2^64-1
				}
			}
		}
		if e.fwd.n > 0 {
			e.queueRepair(&e.fwd, en.Hi, addr)
		}
		if len(sent) > 0 {
			sl.Missing = subtract(sl.Missing, sent)
		}
	}
	return budget
}

// maxEscalate caps the seqs a partition leader asks a sender for on behalf
// of single nodes per stream and round (see escalate).
const maxEscalate = 256

// escalate asks the sender of a stream directly for what one node of the
// partition has lacked for two rounds in a row: its peers could not
// forward it. That happens when the holders counted it as held by their
// start point without ever having had it (a node that entered the region
// later than another starts the stream later). The request is an ack
// with no stability (Stable 0) whose naks name the lacking node, so the
// sender unicasts the messages to it. It returns what each slot lacks now,
// for the next round.
func (e *engine) escalate(en *tokenStream, minAck uint64, ring []uint64, prev []slotLack) []slotLack {
	now := make([]slotLack, len(en.Slots))
	var naks []ackNak
	budget := uint64(maxEscalate)
	for j := range en.Slots {
		sl := &en.Slots[j]
		if sl.State != slotStarted || j >= len(ring) {
			continue // an unstarted node starts on the next datagram it gets
		}
		now[j] = slotLack{lack: lackingOf(sl, minAck, en.Hi), top: max(sl.Ack, sl.Upto)}
		if j >= len(prev) || ring[j] == e.s.id && en.Sender == e.s.id {
			continue
		}
		for _, r := range toEscalate(now[j], prev[j]) {
			if budget == 0 || len(naks) == maxAckNaks {
				break
			}
			r.To = min(r.To, r.From+budget-1)
			budget -= r.To - r.From + 1
			naks = append(naks, ackNak{From: r.From, To: r.To, Target: ring[j]})
		}
	}
	if len(naks) > 0 {
		e.sendAck(en.Sender, 0, naks)
	}
	return now
}

// slotLack is what one node of a partition lacked of a stream in a round,
// and the highest seq it had seen then.
type slotLack struct {
	lack []seqRange
	top  uint64
}

// toEscalate returns what a node lacked both in the last round (prev) and
// in this one (now), except, when it has seen newer messages since, what
// lies above the newest it has seen. A node that falls behind a fast
// sender, its socket's queue holding more than a round of datagrams,
// reports everything it has not read yet as lacking, round after round;
// asking the sender for that only sends it each message twice, and the
// copies add to what it is behind with. Its gaps below what it has seen
// are asked for, and so is everything once it has stopped moving on.
func toEscalate(now, prev slotLack) []seqRange {
	if len(prev.lack) == 0 || len(now.lack) == 0 {
		return nil
	}
	both := intersect(now.lack, prev.lack)
	if now.top <= prev.top {
		return both
	}
	var out []seqRange
	for _, r := range both {
		out = appendClamped(out, r, 0, now.top)
	}
	return out
}

// complete ends a round at the ring's leader.
func (e *engine) complete(t *tokenBody, level uint8) {
	if level == levelPartition {
		sums := map[uint64]*streamSummary{}
		lacks := make(map[uint64][]slotLack, len(t.Streams))
		ring := e.ring(levelPartition, e.myPart)
		for i := range t.Streams {
			en := &t.Streams[i]
			if e.settled(en.Sender) {
				continue
			}
			minAck := en.Hi
			var lack []seqRange
			for j := range en.Slots {
				sl := &en.Slots[j]
				a := uint64(0)
				if sl.State == slotStarted {
					a = sl.Ack
				}
				minAck = min(minAck, a)
			}
			for j := range en.Slots {
				l := lackingOf(&en.Slots[j], minAck, en.Hi)
				if j == 0 {
					lack = l
				} else {
					lack = intersect(lack, l)
				}
			}
			lacks[en.Sender] = e.escalate(en, minAck, ring, e.prevLack[en.Sender])
			e.prevStable[en.Sender] = minAck
			sums[en.Sender] = &streamSummary{hi: en.Hi, minAck: minAck, missing: lack}
		}
		e.partSummary = sums
		e.prevLack = lacks
		e.lastToken = t
		if len(e.parts) == 1 {
			for sender, sum := range sums {
				naks := make([]ackNak, 0, len(sum.missing))
				for _, r := range sum.missing {
					naks = append(naks, ackNak{From: r.From, To: r.To})
				}
				e.sendAck(sender, sum.minAck, naks)
			}
		}
		return
	}
	// Region ring: stability over all partitions; a range that a whole
	// partition lacks goes to its leader, one the whole region lacks is
	// multicast again.
	for i := range t.Streams {
		en := &t.Streams[i]
		if e.settled(en.Sender) {
			continue
		}
		stable := en.Hi
		for j := range en.Slots {
			a := uint64(0)
			if en.Slots[j].State == slotStarted {
				a = en.Slots[j].Ack
			}
			stable = min(stable, a)
		}
		lacks := make([][]seqRange, len(en.Slots))
		var all []seqRange
		for j := range en.Slots {
			lacks[j] = lackingOf(&en.Slots[j], stable, en.Hi)
			if j == 0 {
				all = lacks[j]
			} else {
				all = intersect(all, lacks[j])
			}
		}
		var naks []ackNak
		for _, r := range all {
			naks = append(naks, ackNak{From: r.From, To: r.To})
		}
		for j := range en.Slots {
			if en.Slots[j].State != slotStarted {
				continue
			}
			for _, r := range subtract(lacks[j], all) {
				naks = append(naks, ackNak{From: r.From, To: r.To, Target: e.parts[j][0]})
			}
		}
		if len(naks) > maxAckNaks {
			naks = naks[:maxAckNaks]
		}
		e.regionStable[en.Sender] = stable
		e.sendAck(en.Sender, stable, naks)
	}
	e.lastRegion = t
}

func (e *engine) sendAck(sender, stable uint64, naks []ackNak) {
	a := &ackBody{Stable: stable, Naks: naks}
	if len(a.Naks) > maxAckNaks {
		a.Naks = a.Naks[:maxAckNaks]
	}
	h := dgHeader{Type: dgAck, Sender: e.s.id, Region: e.region.ID, Epoch: e.region.Epoch}
	if sender == e.s.id {
		e.onAck(&packet{hdr: h, ack: a})
		return
	}
	addr, ok := e.addrOf(sender)
	if !ok {
		return
	}
	e.s.send(sealedDatagram(h, a.append(nil), e.auth), addr)
}

// onAck handles a region leader's report at the sender: it frees stable
// messages and sends again what the region or a partition lacks.
func (e *engine) onAck(p *packet) {
	e.s.ctr.acks.Add(1)
	if p.from.IsValid() && !e.sentBy(p) {
		e.s.ctr.foreignRegion.Add(1)
		return
	}
	st := e.sends[p.hdr.Region]
	if st == nil || p.hdr.Epoch != st.epoch {
		e.s.ctr.staleToken.Add(1)
		return
	}
	a := p.ack
	// Only the region's leader knows what the whole region holds; the
	// leaders of its partitions ask for repairs (Stable 0). An ack from
	// anyone else could make this node free messages a member still
	// lacks, which nobody could send it then.
	if p.from.IsValid() {
		_, member := slices.BinarySearch(st.members, p.hdr.Sender)
		if !member || a.Stable != 0 && p.hdr.Sender != st.members[0] {
			e.s.ctr.foreignRegion.Add(1)
			e.log.Debug("ack not from the region's leader; ignored", "from", p.from.String(), "sender", p.hdr.Sender, "region", p.hdr.Region)
			return
		}
	}
	if a.Stable > st.stable && a.Stable < st.next {
		n := a.Stable - st.stable
		for _, om := range st.buf[:n] {
			if om != nil {
				om.release()
			}
		}
		clear(st.buf[:n])
		st.buf = st.buf[n:]
		st.stable = a.Stable
		if len(st.buf) == 0 {
			st.buf = nil
		}
		st.pruneStarts()
	}
	now := time.Now()
	gap := max(e.tick, 5*time.Millisecond)
	budget := e.s.cfg.Window
	if e.mute {
		budget = 0
	}
	var b dgBuilder
	for _, k := range a.Naks {
		to := st.dst
		if k.Target != 0 {
			addr, ok := e.addrOf(k.Target)
			if !ok {
				continue
			}
			to = addr
		}
		b.n = 0
		d := st.body(dataFlagRepair)
		h := dgHeader{Type: dgData, Sender: e.s.id, Region: st.region, Epoch: st.epoch}
		for x := max(k.From, st.stable+1); x <= k.To && x < st.next && budget > 0; x++ {
			m := st.get(x)
			if m == nil || now.Sub(m.resent) < gap {
				continue
			}
			m.resent = now
			if b.n == 0 {
				b.begin(h, &d, to, e.mtu())
			} else if !b.fits(&m.message) {
				e.queueRepair(&b, st.next-1, to)
				b.begin(h, &d, to, e.mtu())
			}
			b.add(&m.message)
			budget--
			e.s.ctr.resent.Add(1)
		}
		if b.n > 0 {
			e.queueRepair(&b, st.next-1, to)
		}
	}
	e.sendOutbox()
	e.admit()
}
