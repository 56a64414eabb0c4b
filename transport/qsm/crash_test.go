package qsm

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestSenderCrashSurvivorsRepair: a sender fails while one receiver lacks
// messages that another holds. Once the sender has left the view, the
// survivors repair each other from what they hold, and both deliver the
// same events, in order.
func TestSenderCrashSurvivorsRepair(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 3)
	ctx := context.Background()
	sender, a, b := cl.svcs[0], cl.svcs[1], cl.svcs[2]
	pub, recs := joinEvery(t, cl, "crash")
	const warm, lost = 500, 300
	for i := 0; i < warm; i++ {
		if err := pub.PublishAsync(ctx, []byte(fmt.Sprint("warm ", i))); err != nil {
			t.Fatal(err)
		}
	}
	recs[1].waitCount(t, warm, 10*time.Second)
	recs[2].waitCount(t, warm, 10*time.Second)
	// A loses what the sender sends next; B gets it all; then the sender
	// fails before it could repair A.
	var from uint64
	inEngine(t, a, func(e *engine) {
		from = e.recvs[sender.NodeID()].next
		e.lose = func(snd, _, seq uint64) bool { return snd == sender.NodeID() && seq >= from && seq < from+lost }
	})
	inEngine(t, sender, func(e *engine) { e.mute = true })
	for i := 0; i < lost; i++ {
		if err := pub.PublishAsync(ctx, []byte(fmt.Sprint("late ", i))); err != nil {
			t.Fatal(err)
		}
	}
	recs[2].waitCount(t, warm+lost, 10*time.Second)
	sender.freeze()
	inEngine(t, a, func(e *engine) { e.lose = nil })
	if n := recs[1].n(); n != warm {
		t.Fatalf("A delivered %d events before the sender failed, want %d", n, warm)
	}
	checkFor(t, cfg.FailureTimeout()+5*time.Second, 5*time.Millisecond, func() error {
		if cl.coord.View().node(sender.NodeID()) != nil {
			return fmt.Errorf("the sender is still in the view")
		}
		return nil
	})
	recs[1].waitCount(t, warm+lost, 10*time.Second)
	for i, r := range recs[1:] {
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("survivor %d: %v", i+1, p)
		}
	}
	if na, nb := recs[1].n(), recs[2].n(); na != nb {
		t.Fatalf("survivors delivered %d and %d events", na, nb)
	}
	if st := b.Stats(); st.Forwarded == 0 {
		t.Fatalf("B forwarded nothing: %+v", st)
	}
	waitForgotten(t, cl.svcs[1:], sender.NodeID())
}

// TestSenderCrashGapNobodyHolds: a sender fails after every survivor lost
// the same messages and received later ones. The survivors settle its
// stream alike: each skips what nobody held and the first event after it
// (a message after a gap may be the tail of an event whose head is lost:
// the format cannot tell), delivers the rest, and counts the skipped
// messages.
func TestSenderCrashGapNobodyHolds(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 3)
	sender := cl.svcs[0]
	pub, recs := joinEvery(t, cl, "gap")
	const warm, gap, after = 200, 100, 150
	publishEvents(t, pub, warm)
	recs[1].waitCount(t, warm, 10*time.Second)
	recs[2].waitCount(t, warm, 10*time.Second)
	// Both survivors lose the next events, and the sender will not send
	// them again; the events after them arrive.
	var from uint64
	inEngine(t, cl.svcs[1], func(e *engine) { from = e.recvs[sender.NodeID()].next })
	inEngine(t, sender, func(e *engine) { e.mute = true })
	for _, s := range cl.svcs[1:] {
		inEngine(t, s, func(e *engine) {
			e.lose = func(snd, _, seq uint64) bool { return snd == sender.NodeID() && seq >= from && seq < from+gap }
		})
	}
	publishEvents(t, pub, gap+after)
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		for _, s := range cl.svcs[1:] {
			var held int
			inEngine(t, s, func(e *engine) { held = e.recvs[sender.NodeID()].pending.n })
			if held < after {
				return fmt.Errorf("a survivor holds %d of the %d events after the gap", held, after)
			}
		}
		return nil
	})
	sender.freeze()
	want := warm + after - 1
	for i, r := range recs[1:] {
		r.waitCount(t, want, cfg.FailureTimeout()+10*time.Second)
		time.Sleep(20 * time.Millisecond)
		if n := r.n(); n != want {
			t.Fatalf("survivor %d delivered %d events, want %d", i+1, n, want)
		}
		if lost := cl.svcs[i+1].Stats().OrphanLost; lost != gap+1 {
			t.Fatalf("survivor %d counted %d messages lost, want %d", i+1, lost, gap+1)
		}
	}
	// Both saw the same jump over the gap, and nothing else out of order.
	pa, pb := recs[1].problems(), recs[2].problems()
	if len(pa) != 1 || fmt.Sprint(pa) != fmt.Sprint(pb) {
		t.Fatalf("survivors saw %v and %v; want the same single jump over the gap", pa, pb)
	}
	waitForgotten(t, cl.svcs[1:], sender.NodeID())
}

// joinEvery joins a member of group at every service of cl and waits for
// the view; the first member is the one to publish from.
func joinEvery(t *testing.T, cl *cluster, group string) (*Member, []*recorder) {
	t.Helper()
	var recs []*recorder
	var pub *Member
	for i, s := range cl.svcs {
		r := newRecorder(false)
		m, err := dial(t, s.Addr()).JoinMember(context.Background(), group, r)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			pub = m
		}
		recs = append(recs, r)
	}
	waitGroupView(t, cl, group, len(cl.svcs))
	return pub, recs
}

// inEngine runs f on s's engine goroutine.
func inEngine(t *testing.T, s *Service, f func(e *engine)) {
	t.Helper()
	if !s.inEngine(f) {
		t.Fatal("engine gone")
	}
}

// TestCoordinatorRestartLosesNothing: the coordinator restarts while a
// receiver lacks messages the sender has not yet sent again. In the next
// session the sender sends its unstable messages again into the new
// streams, and the receiver delivers every event once, in order.
func TestCoordinatorRestartLosesNothing(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 3)
	sender, b := cl.svcs[0], cl.svcs[2]
	pub, recs := joinEvery(t, cl, "restart")
	const warm, lost, after = 300, 200, 100
	publishEvents(t, pub, warm)
	recs[1].waitCount(t, warm, 10*time.Second)
	recs[2].waitCount(t, warm, 10*time.Second)
	// Both receivers lose what the sender sends next, in this session's
	// stream, and the sender sends none of it again in this session.
	var from, epoch uint64
	inEngine(t, b, func(e *engine) { rs := e.recvs[sender.NodeID()]; from, epoch = rs.next, rs.streamEpoch })
	for _, s := range cl.svcs[1:] {
		inEngine(t, s, func(e *engine) {
			v0 := e.view // only in this session
			e.lose = func(snd, se, seq uint64) bool {
				return e.view == v0 && snd == sender.NodeID() && se == epoch && seq >= from && seq < from+lost
			}
		})
	}
	inEngine(t, sender, func(e *engine) { e.mute = true })
	publishEvents(t, pub, lost)
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		if st := sender.Stats(); st.Published < warm+lost {
			return fmt.Errorf("published %d", st.Published)
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond)
	for i, r := range recs[1:] {
		if n := r.n(); n != warm {
			t.Fatalf("receiver %d delivered %d events before the restart, want %d", i+1, n, warm)
		}
	}
	// The coordinator goes and comes back at the same address; in the
	// new session the receivers hear everything and the sender repairs as
	// usual.
	var v0 *View
	inEngine(t, sender, func(e *engine) { v0 = e.view })
	cl.restartCoordinator()
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		var back bool
		inEngine(t, sender, func(e *engine) {
			if back = e.view != v0 && !e.newSession; back {
				e.mute = false
			}
		})
		if !back {
			return fmt.Errorf("the sender has no view of the new session yet")
		}
		return nil
	})
	publishEvents(t, pub, after)
	for i, r := range recs[1:] {
		r.waitCount(t, warm+lost+after, 20*time.Second)
		time.Sleep(50 * time.Millisecond)
		if n := r.n(); n != warm+lost+after {
			t.Fatalf("receiver %d delivered %d events, want %d", i+1, n, warm+lost+after)
		}
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("receiver %d: %v", i+1, p)
		}
	}
	if st := sender.Stats(); st.Handovers == 0 {
		t.Fatalf("the sender sent nothing again: %+v", st)
	}
}

// TestPartitionRepairedByLeader: in a region of three partitions, every
// node of one partition loses messages that the others hold, and the
// sender sends nothing again. The leader of a partition that holds them
// forwards them to the lacking partition's leader, which spreads them in
// its own ring: everyone delivers everything, in order.
func TestPartitionRepairedByLeader(t *testing.T) {
	cfg := testConfig(t)
	cfg.PartitionSize = 2
	cl := newCluster(t, cfg, 5)
	ctx := context.Background()
	_, recs := joinEvery(t, cl, "parts")
	var parts [][]uint64
	inEngine(t, cl.svcs[0], func(e *engine) {
		for _, p := range e.parts {
			parts = append(parts, slices.Clone(p))
		}
	})
	if len(parts) != 3 {
		t.Fatalf("partitions %v, want 3", parts)
	}
	byID := map[uint64]int{}
	for i, s := range cl.svcs {
		byID[s.NodeID()] = i
	}
	// The sender is no leader; the lacking partition is another one with
	// two nodes.
	var sender, lacking int
	for pi, p := range parts {
		if len(p) == 2 {
			sender = byID[p[1]]
			lacking = (pi + 1) % len(parts)
			if len(parts[lacking]) != 2 {
				lacking = (pi + 2) % len(parts)
			}
			break
		}
	}
	m, err := dial(t, cl.svcs[sender].Addr()).JoinMember(ctx, "parts", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	s := cl.svcs[sender]
	const warm, lost = 200, 200
	for i := 0; i < warm; i++ {
		if err := m.PublishAsync(ctx, []byte(fmt.Sprint("warm ", i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range recs {
		r.waitCount(t, warm, 10*time.Second)
	}
	var lackers []*Service
	for _, id := range parts[lacking] {
		lackers = append(lackers, cl.svcs[byID[id]])
	}
	loseNext(t, lackers, s.NodeID(), lost)
	// What the sender sent again before (a warm-up datagram that a busy
	// machine dropped) is not counted.
	var resent0 uint64
	inEngine(t, s, func(e *engine) { e.mute, resent0 = true, e.s.ctr.resent.Load() })
	for i := 0; i < lost; i++ {
		if err := m.PublishAsync(ctx, []byte(fmt.Sprint("more ", i))); err != nil {
			t.Fatal(err)
		}
	}
	// The others hold them; then the lacking partition hears again.
	for i, r := range recs {
		if !slices.Contains(parts[lacking], cl.svcs[i].NodeID()) {
			r.waitCount(t, warm+lost, 10*time.Second)
		}
	}
	for _, id := range parts[lacking] {
		inEngine(t, cl.svcs[byID[id]], func(e *engine) { e.lose = nil })
	}
	for i, r := range recs {
		r.waitCount(t, warm+lost, 10*time.Second)
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("node %d: %v", i, p)
		}
	}
	if st := s.Stats(); st.Resent != resent0 {
		t.Fatalf("the sender sent %d messages again", st.Resent-resent0)
	}
	// Nodes keep messages until the whole region holds them, and then
	// free them: the region's stable point reaches every partition.
	waitNothingKept(t, cl)
}

// loseNext makes each of svcs lose the next n messages of sender's stream
// (with the datagrams that announce them) and returns the first seq lost.
func loseNext(t *testing.T, svcs []*Service, sender uint64, n uint64) uint64 {
	t.Helper()
	var from uint64
	inEngine(t, svcs[0], func(e *engine) { from = e.recvs[sender].next })
	for _, s := range svcs {
		inEngine(t, s, func(e *engine) {
			e.lose = func(snd, _, seq uint64) bool { return snd == sender && seq >= from && seq < from+n }
		})
	}
	return from
}

// TestCoordinatorRestartWaitsForMembers: after a coordinator restart, a
// node of the group comes back later than the sender; what the sender
// publishes meanwhile waits for it instead of going to the nodes that are
// back only, and every receiver delivers every event, in order.
func TestCoordinatorRestartWaitsForMembers(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 3)
	ctx := context.Background()
	b := cl.svcs[2]
	pub, recs := joinEvery(t, cl, "late")
	const before, after = 100, 100
	for i := 0; i < before; i++ {
		if _, err := pub.Publish(ctx, []byte(fmt.Sprint("before ", i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range recs[1:] {
		r.waitCount(t, before, 10*time.Second)
	}
	b.holdGMS.Store(true)
	cl.restartCoordinator()
	// The sender and A are back; B is not.
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := len(cl.coord.View().Nodes); n != 2 {
			return fmt.Errorf("%d nodes back", n)
		}
		return nil
	})
	done := make(chan error, 1)
	go func() {
		for i := 0; i < after; i++ {
			if err := pub.PublishAsync(ctx, []byte(fmt.Sprint("after ", i))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	time.Sleep(300 * time.Millisecond)
	if n := recs[1].n(); n != before {
		t.Fatalf("A delivered %d events while B was away, want them held back (%d)", n, before)
	}
	b.holdGMS.Store(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, r := range recs[1:] {
		r.waitCount(t, before+after, 20*time.Second)
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("receiver %d: %v", i+1, p)
		}
	}
}

// TestSenderCrashSurvivorsAcrossPartitions: a sender fails while a whole
// token ring of survivors (a partition of the region that the survivors
// form without it) lacks messages that the other partition holds. The
// region's ring of partition leaders carries the stream on, a leader
// hands the missing messages to the other, and every survivor delivers
// every event. The lacking ring is led by the region ring's leader in one
// case (the holder comes after it in the region's ring) and by the other
// leader in the other (the holder comes first).
func TestSenderCrashSurvivorsAcrossPartitions(t *testing.T) {
	for _, lack := range []int{0, 1} {
		t.Run(fmt.Sprintf("lacking ring %d", lack), func(t *testing.T) { survivorsAcrossPartitions(t, lack, false) })
	}
	// The region's leader settles the stream seconds after the other
	// partition's leader: its region tokens carry the stream to a node
	// that has forgotten it, which must not take it up again.
	t.Run("region leader settles last", func(t *testing.T) { survivorsAcrossPartitions(t, 0, true) })
}

func survivorsAcrossPartitions(t *testing.T, lack int, leaderLast bool) {
	cfg := testConfig(t)
	cfg.PartitionSize = 2
	cl := newCluster(t, cfg, 5)
	ctx := context.Background()
	// The sender is the node with the highest id: the survivors' rings
	// are then the rings they were in before it failed, and the holding
	// ring holds the messages on its own for the whole time.
	slices.SortFunc(cl.svcs, func(a, b *Service) int { return cmp.Compare(b.NodeID(), a.NodeID()) })
	sender := cl.svcs[0]
	pub, recs := joinEvery(t, cl, "parts")
	const warm, lost = 300, 200
	for i := 0; i < warm; i++ {
		if err := pub.PublishAsync(ctx, []byte(fmt.Sprint("warm ", i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range recs[1:] {
		r.waitCount(t, warm, 10*time.Second)
	}
	// The survivors' region, sorted by id as views list it, splits into
	// two rings of two; ring lack loses what the sender sends next.
	var ids []uint64
	byID := map[uint64]int{}
	for i, s := range cl.svcs[1:] {
		ids = append(ids, s.NodeID())
		byID[s.NodeID()] = i + 1
	}
	slices.Sort(ids)
	parts := partitions(ids, cfg.PartitionSize)
	if len(parts) != 2 {
		t.Fatalf("survivors form %d partitions, want 2: %v", len(parts), parts)
	}
	lacking, holding := parts[lack], parts[1-lack]
	var lackers []*Service
	for _, id := range lacking {
		lackers = append(lackers, cl.svcs[byID[id]])
	}
	from := loseNext(t, lackers, sender.NodeID(), lost)
	inEngine(t, sender, func(e *engine) { e.mute = true })
	for i := 0; i < lost; i++ {
		if err := pub.PublishAsync(ctx, []byte(fmt.Sprint("late ", i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range holding {
		recs[byID[id]].waitCount(t, warm+lost, 10*time.Second)
	}
	// Every node of the holding ring has had the messages for 20 token
	// rounds: it would have freed them if only its own ring counted.
	time.Sleep(20 * time.Second / time.Duration(cfg.TokenRate))
	for _, id := range holding {
		inEngine(t, cl.svcs[byID[id]], func(e *engine) {
			if rs := e.recvs[sender.NodeID()]; rs == nil || rs.get(from) == nil || rs.get(from+lost-1) == nil {
				t.Errorf("node %x of the holding ring freed messages the other ring lacks", id)
			}
		})
	}
	// The lacking ring takes nothing of those messages (repairs neither)
	// until the sender has left the view; then only the other ring holds
	// them.
	sender.freeze()
	checkFor(t, cfg.FailureTimeout()+5*time.Second, 5*time.Millisecond, func() error {
		v := cl.coord.View()
		if v.node(sender.NodeID()) != nil {
			return fmt.Errorf("the sender is still in the view")
		}
		for _, s := range cl.svcs[1:] {
			if s.Stats().View < v.Number {
				return fmt.Errorf("a survivor has not installed view %d", v.Number)
			}
		}
		return nil
	})
	regionLeader, otherLeader := cl.svcs[byID[parts[0][0]]], cl.svcs[byID[parts[1][0]]]
	if leaderLast {
		// Its orphan time starts later (a tick sets it only when unset).
		inEngine(t, regionLeader, func(e *engine) {
			if rs := e.recvs[sender.NodeID()]; rs != nil {
				rs.orphanAt = time.Now().Add(3 * time.Second)
			}
		})
	}
	for _, s := range lackers {
		inEngine(t, s, func(e *engine) { e.lose = nil })
	}
	for _, id := range lacking {
		if n := recs[byID[id]].n(); n != warm {
			t.Fatalf("a node of the lacking ring delivered %d events before the repair, want %d", n, warm)
		}
	}
	for i, r := range recs[1:] {
		r.waitCount(t, warm+lost, 15*time.Second)
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("survivor %d: %v", i+1, p)
		}
	}
	time.Sleep(50 * time.Millisecond)
	for i, r := range recs[1:] {
		if n := r.n(); n != warm+lost {
			t.Fatalf("survivor %d delivered %d events, want %d", i+1, n, warm+lost)
		}
		if ol := cl.svcs[i+1].Stats().OrphanLost; ol != 0 {
			t.Fatalf("survivor %d counted %d messages lost", i+1, ol)
		}
	}
	// The other ring's leader handed the messages over.
	if st := cl.svcs[byID[holding[0]]].Stats(); st.Forwarded < lost {
		t.Fatalf("the holding ring's leader forwarded %d messages, want at least %d", st.Forwarded, lost)
	}
	if leaderLast {
		// The other partition's leader settles while the region's leader
		// still carries the stream in its tokens.
		held := func(s *Service) (held bool) {
			inEngine(t, s, func(e *engine) { held = e.recvs[sender.NodeID()] != nil })
			return held
		}
		checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if held(otherLeader) {
				return fmt.Errorf("the other partition's leader has not settled the stream")
			}
			return nil
		})
		if !held(regionLeader) {
			t.Fatal("the region's leader settled the stream as early as the other partition's leader")
		}
		time.Sleep(20 * time.Second / time.Duration(cfg.TokenRate))
	}
	// Once settled, the failed sender's stream leaves no state behind.
	waitForgotten(t, cl.svcs[1:], sender.NodeID())
}

// waitForgotten waits until none of svcs holds any state of the stream of
// sender, which has left the view: each has settled the stream, and the
// tokens that other nodes still sent with it brought nothing back.
func waitForgotten(t *testing.T, svcs []*Service, sender uint64) {
	t.Helper()
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for i, s := range svcs {
			var left []string
			inEngine(t, s, func(e *engine) {
				if e.recvs[sender] != nil {
					left = append(left, "stream")
				}
				if _, ok := e.prevStable[sender]; ok {
					left = append(left, "partition stable point")
				}
				if _, ok := e.regionStable[sender]; ok {
					left = append(left, "region stable point")
				}
				if e.partSummary[sender] != nil {
					left = append(left, "summary")
				}
			})
			if len(left) > 0 {
				return fmt.Errorf("survivor %d still has the failed sender's %v", i, left)
			}
		}
		return nil
	})
}
