package qsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// engineAnswers checks that s's engine goroutine runs a function within
// wait: it is not stuck in a loop.
func engineAnswers(t *testing.T, s *Service, wait time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go s.inEngine(func(*engine) { close(done) })
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatalf("the engine of %s did not answer within %v", s.name, wait)
	}
}

// regionState returns the id and epoch of s's region and its members.
func regionState(t *testing.T, s *Service) (id, epoch uint64, members []uint64) {
	t.Helper()
	inEngine(t, s, func(e *engine) {
		if e.region != nil {
			id, epoch, members = e.region.ID, e.region.Epoch, slices.Clone(e.region.Members)
		}
	})
	if id == 0 {
		t.Fatal("service has no region")
	}
	return id, epoch, members
}

// serviceByID returns the service of cl with node id.
func serviceByID(cl *cluster, id uint64) *Service {
	for _, s := range cl.svcs {
		if s.id == id {
			return s
		}
	}
	return nil
}

// TestLyingTokenRange: a member of the region sends a token whose slot
// claims to lack every seq up to 2^64-1. The node that holds the stream
// forwards what it has of that range and goes on serving; it does not
// walk the whole range.
func TestLyingTokenRange(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 2)
	ctx := context.Background()
	_, recs := joinEvery(t, cl, "g")
	_, _, members := regionState(t, cl.svcs[0])
	leader, victim := serviceByID(cl, members[0]), serviceByID(cl, members[1])
	// The victim (second in the ring) sends a few events, which become
	// stable: its stream holds none of them any more.
	vm, err := dial(t, victim.Addr()).JoinMember(ctx, "g", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := vm.Publish(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	region, epoch, _ := regionState(t, victim)
	// The leader, from its own socket, hands the victim a token of a
	// round it has not seen in which the leader lacks everything.
	tk := tokenBody{Level: levelPartition, Round: 1 << 40, Streams: []tokenStream{{
		Sender: victim.id, Hi: math.MaxUint64,
		Slots: []tokenSlot{
			{State: slotStarted, Ack: 0, Upto: math.MaxUint64, Missing: []seqRange{{1, math.MaxUint64}}},
			{State: slotUnvisited},
		},
	}}}
	leader.send(encodeDatagram(dgHeader{Type: dgToken, Sender: leader.id, Region: region, Epoch: epoch}, tk.append(nil)), victim.DataAddr())
	// The victim takes the token (it comes from its predecessor) and
	// serves it.
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		engineAnswers(t, victim, 2*time.Second)
		var seen uint64
		inEngine(t, victim, func(e *engine) { seen = e.seenRound[levelPartition] })
		if seen < tk.Round {
			return fmt.Errorf("the victim has not taken the token: it has seen round %d", seen)
		}
		return nil
	})
	engineAnswers(t, victim, 2*time.Second)
	if _, err := vm.Publish(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		r.waitCount(t, 4, 5*time.Second)
	}
}

// TestLyingDataHi: a datagram that announces a stream's end at 2^64-1
// does not make the receiver report (and its peers walk) a gap of that
// size, nor queue messages far beyond what a sender can have in flight.
func TestLyingDataHi(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 2)
	ctx := context.Background()
	pub, recs := joinEvery(t, cl, "g")
	sender, receiver := cl.svcs[0], cl.svcs[1]
	for i := 0; i < 3; i++ {
		if _, err := pub.Publish(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	recs[1].waitCount(t, 3, 5*time.Second)
	region, epoch, _ := regionState(t, receiver)
	var streamEpoch, next uint64
	inEngine(t, receiver, func(e *engine) {
		rs := e.recvs[sender.id]
		streamEpoch, next = rs.streamEpoch, rs.next
	})
	// Forged by a peer: the end of the sender's stream far away, and
	// messages far beyond anything a sender's window lets it send.
	overload := receiver.Stats().Overload
	d := dataBody{StreamEpoch: streamEpoch, EpochStart: 1, Hi: math.MaxUint64}
	b := dgHeader{Type: dgData, Sender: sender.id, Region: region, Epoch: epoch}.append(nil)
	b = appendDataHeader(b, &d, 0)
	sealDatagram(b)
	sender.send(b, receiver.DataAddr())
	const far = 20
	for k := uint64(0); k < far; k++ {
		d := dataBody{StreamEpoch: streamEpoch, EpochStart: 1, Hi: next + 1<<30}
		b := dgHeader{Type: dgData, Sender: sender.id, Region: region, Epoch: epoch}.append(nil)
		b = appendDataHeader(b, &d, 1)
		b = appendMessage(b, &message{Seq: next + 1<<20 + k, Group: GroupID("g"), Source: 1, GSeq: 1 << 40, Data: []byte("evil")})
		sealDatagram(b)
		sender.send(b, receiver.DataAddr())
	}
	// Each message beyond the window is counted as it is turned away.
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := receiver.Stats().Overload - overload; got < far {
			return fmt.Errorf("%d of %d messages far ahead turned away", got, far)
		}
		return nil
	})
	engineAnswers(t, sender, 2*time.Second)
	engineAnswers(t, receiver, 2*time.Second)
	inEngine(t, receiver, func(e *engine) {
		rs := e.recvs[sender.id]
		if lim := rs.next + uint64(4*cfg.Window); rs.hi > lim {
			t.Errorf("receiver takes the stream to reach seq %d (next %d)", rs.hi, rs.next)
		}
		if rs.pending.n > 0 {
			t.Errorf("receiver queued %d messages far beyond its window", rs.pending.n)
		}
	})
	for i := 0; i < 3; i++ {
		if _, err := pub.Publish(ctx, []byte(fmt.Sprint("after ", i))); err != nil {
			t.Fatal(err)
		}
	}
	recs[1].waitCount(t, 6, 5*time.Second)
	if p := recs[1].problems(); len(p) > 0 {
		t.Fatal(p)
	}
}

// TestForgedAck: acks that free a sender's messages come from its
// region's leader only. A peer that is not the leader, or a host that
// borrows the leader's id, cannot make the sender drop messages that the
// region does not hold; they still reach every member.
func TestForgedAck(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 3)
	ctx := context.Background()
	pub, recs := joinEvery(t, cl, "g")
	sender := cl.svcs[0]
	region, epoch, members := regionState(t, sender)
	var liar *Service
	for _, id := range members[1:] {
		if id != sender.id {
			liar = serviceByID(cl, id)
			break
		}
	}
	// Only the sender holds what it publishes now.
	for _, s := range cl.svcs[1:] {
		inEngine(t, s, func(e *engine) { e.deaf = true })
	}
	const n = 20
	for i := 0; i < n; i++ {
		if _, err := pub.Publish(ctx, []byte(fmt.Sprint("msg ", i))); err != nil {
			t.Fatal(err)
		}
	}
	var next uint64
	inEngine(t, sender, func(e *engine) { next = e.sends[region].next })
	ack := func(from uint64) []byte {
		a := ackBody{Stable: next - 1}
		return encodeDatagram(dgHeader{Type: dgAck, Sender: from, Region: region, Epoch: epoch}, a.append(nil))
	}
	// A member that is not the leader, from its own socket.
	liar.send(ack(liar.id), sender.DataAddr())
	// Some host using the leader's id.
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.WriteToUDPAddrPort(ack(members[0]), sender.DataAddr())
	before := sender.Stats().Acks
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := sender.Stats().Acks; got < before+2 {
			return fmt.Errorf("%d acks so far", got-before)
		}
		return nil
	})
	inEngine(t, sender, func(e *engine) {
		if st := e.sends[region]; st.stable != 0 {
			t.Errorf("sender freed its messages up to %d on a forged ack", st.stable)
		}
	})
	for _, s := range cl.svcs[1:] {
		inEngine(t, s, func(e *engine) { e.deaf = false })
	}
	for i, r := range recs {
		r.waitCount(t, n, 10*time.Second)
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("receiver %d: %v", i, p)
		}
	}
}

// TestForgedToken: a node takes a token only from its predecessor in the
// ring, at that node's address. A token from another member, or from a
// host that borrows the predecessor's id, with a round number far ahead
// does not make the real rounds look stale (which would end repair at
// the node for good).
func TestForgedToken(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 3)
	joinEvery(t, cl, "g")
	region, epoch, members := regionState(t, cl.svcs[0])
	leader, pred, victim := serviceByID(cl, members[0]), serviceByID(cl, members[1]), serviceByID(cl, members[2])
	tk := tokenBody{Level: levelPartition, Round: 1 << 40}
	dg := func(from uint64) []byte {
		return encodeDatagram(dgHeader{Type: dgToken, Sender: from, Region: region, Epoch: epoch}, tk.append(nil))
	}
	before := victim.Stats().ForeignRegion
	leader.send(dg(leader.id), victim.DataAddr())
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.WriteToUDPAddrPort(dg(pred.id), victim.DataAddr())
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		var seen uint64
		inEngine(t, victim, func(e *engine) { seen = e.seenRound[levelPartition] })
		if seen >= 1<<40 {
			return fmt.Errorf("the victim took a forged token: it has seen round %d", seen)
		}
		if got := victim.Stats().ForeignRegion - before; got < 2 {
			return fmt.Errorf("%d forged tokens counted", got)
		}
		return nil
	})
}

// stallReader returns its bytes, then reports the end of the stream.
type stallReader struct{ b []byte }

func (r *stallReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// TestFrameLengthNotTrusted: a frame header announcing a large frame
// does not make the reader allocate that much before the bytes come.
func TestFrameLengthNotTrusted(t *testing.T) {
	const claimed = 48 << 20
	b := binary.BigEndian.AppendUint32(nil, claimed)
	b = append(b, cliPublish, 1, 2, 3)
	fr := newFrameReader(&stallReader{b: b}, maxFrame)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := fr.next()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short frame: %v", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
		t.Fatalf("reading 8 bytes of a frame said to be of %d allocated %d bytes", claimed, got)
	}
	// Frames larger than the read buffer still come whole, in order,
	// read a little at a time.
	var stream []byte
	var want [][]byte
	for _, size := range []int{300 << 10, 10, 64<<10 + 7, 1 << 20} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i * size)
		}
		want = append(want, body)
		stream = appendFrame(stream, cliPublish, body)
	}
	fr = newFrameReader(&twoPart{a: stream[:len(stream)/3], b: stream[len(stream)/3:]}, maxFrame)
	for i, w := range want {
		typ, body, err := fr.next()
		if err != nil || typ != cliPublish || !bytes.Equal(body, w) {
			t.Fatalf("frame %d: type %d, %d bytes, %v", i, typ, len(body), err)
		}
	}
}

// TestHelloFrameCapped: before its hello, a peer of the coordinator or a
// client of the service cannot announce a large frame; the link is
// closed at once with an error, not held open while the bytes come.
func TestHelloFrameCapped(t *testing.T) {
	cl := newCluster(t, testConfig(t), 1)
	for _, addr := range []string{cl.coord.Addr(), cl.svcs[0].Addr()} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write(binary.BigEndian.AppendUint32(nil, 1<<20))
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		fr := newFrameReader(conn, maxFrame)
		typ, _, err := fr.next()
		if err != nil || typ != gmsError && typ != cliError {
			t.Fatalf("%s: a hello of 1 MiB got frame type %d, %v; want an error frame", addr, typ, err)
		}
		if _, _, err := fr.next(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: the link stayed open: %v", addr, err)
		}
	}
}

// rawClient is a client link spoken frame by frame, as a client that
// does not follow the protocol would.
type rawClient struct {
	conn net.Conn
	fr   *frameReader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e := encoder{}
	e.b = append(e.b, cliMagic...)
	e.u8(ProtocolVersionMin)
	e.u8(ProtocolVersionMax)
	e.str("raw")
	conn.Write(appendFrame(nil, cliHello, e.b))
	rc := &rawClient{conn: conn, fr: newFrameReader(conn, maxFrame)}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if typ, _, err := rc.fr.next(); err != nil || typ != cliWelcome {
		t.Fatalf("welcome: type %d, %v", typ, err)
	}
	return rc
}

// join joins channel as member id and waits for the answer.
func (rc *rawClient) join(t *testing.T, id uint32, channel string) {
	t.Helper()
	e := encoder{}
	e.u32(id)
	e.u32(id)
	e.str(channel)
	rc.conn.Write(appendFrame(nil, cliJoin, e.b))
	rc.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		typ, _, err := rc.fr.next()
		if err != nil {
			t.Fatalf("join: %v", err)
		}
		if typ == cliJoined {
			return
		}
		if typ == cliError {
			t.Fatal("join refused")
		}
	}
}

// TestClientCreditsEnforced: a client that publishes without waiting for
// the answers, beyond the credits the service grants, is told so and cut
// off; what it sent does not pile up in the service.
func TestClientCreditsEnforced(t *testing.T) {
	_, svc, peer := heldBackPair(t)
	ctx := context.Background()
	if _, err := dial(t, peer.Addr()).JoinMember(ctx, "g", newRecorder(false)); err != nil {
		t.Fatal(err)
	}
	rc := dialRaw(t, svc.Addr())
	rc.join(t, 1, "g")
	// The peer holds nothing: the window fills and publishes wait.
	inEngine(t, peer, func(e *engine) { e.deaf = true })
	var pubs []byte
	for i := 0; i < 2000; i++ {
		pubs = appendFrame(pubs, cliPublish, []byte{0, 0, 0, 1, 'x'})
	}
	go rc.conn.Write(pubs)
	rc.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var msg string
	for msg == "" {
		typ, body, err := rc.fr.next()
		if err != nil {
			t.Fatalf("no error frame before the link ended: %v", err)
		}
		if typ == cliError {
			d := decoder{b: body}
			d.u32()
			d.u32()
			d.u16()
			msg = d.str()
		}
	}
	if !strings.Contains(msg, "client_credits") {
		t.Fatalf("error %q does not say what was wrong", msg)
	}
	if _, _, err := rc.fr.next(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the link stayed open: %v", err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		var n int
		inEngine(t, svc, func(e *engine) { n = len(e.pending) })
		if n > 0 {
			return fmt.Errorf("%d publishes of the cut client still wait", n)
		}
		return nil
	})
}

// gmsHelloFrame is a service's hello to the coordinator.
func gmsHelloFrame(id uint64, name, addr string) []byte {
	e := encoder{}
	e.b = append(e.b, gmsMagic...)
	e.u8(ProtocolVersionMin)
	e.u8(ProtocolVersionMax)
	e.u64(id)
	e.str(name)
	e.str(addr)
	return appendFrame(nil, gmsHello, e.b)
}

// TestCoordinatorIdentityTaken: a link that claims the id of a live node
// at another address, or the address of a live node, is refused; the
// node stays in the view as it was.
func TestCoordinatorIdentityTaken(t *testing.T) {
	cl := newCluster(t, testConfig(t), 1)
	svc := cl.svcs[0]
	for _, hello := range [][]byte{
		gmsHelloFrame(svc.id, "impostor", "127.0.0.1:9"),
		gmsHelloFrame(svc.id+2, "squatter", svc.DataAddr().String()),
	} {
		conn, err := net.Dial("tcp", cl.coord.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write(hello)
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		typ, body, err := newFrameReader(conn, maxFrame).next()
		if err != nil || typ != gmsError {
			t.Fatalf("the coordinator answered a borrowed identity with frame type %d, %v", typ, err)
		}
		d := decoder{b: body}
		if code := d.u16(); code != codeDenied {
			t.Fatalf("error code %d (%s), want %d", code, d.str(), codeDenied)
		}
	}
	time.Sleep(50 * time.Millisecond)
	v := cl.coord.View()
	if len(v.Nodes) != 1 || v.Nodes[0].ID != svc.id || v.Nodes[0].Addr != svc.DataAddr() {
		t.Fatalf("view %d after the impostors: %+v", v.Number, v.Nodes)
	}
	c := dial(t, svc.Addr())
	if _, err := c.Join(context.Background(), "g", newRecorder(false)); err != nil {
		t.Fatal(err)
	}
}

// forgeNext returns a datagram, sealed with a checksum and no tag, that
// looks like the next message of sender's stream as receiver expects it:
// an event of group "g" from the sender's first publishing membership
// (source 1) numbered gseq.
func forgeNext(t *testing.T, sender, receiver *Service, gseq uint64, data string) []byte {
	t.Helper()
	region, epoch, _ := regionState(t, receiver)
	var streamEpoch, next uint64
	inEngine(t, receiver, func(e *engine) {
		rs := e.recvs[sender.id]
		streamEpoch, next = rs.streamEpoch, rs.next
	})
	d := dataBody{StreamEpoch: streamEpoch, EpochStart: 1, Hi: next}
	b := dgHeader{Type: dgData, Sender: sender.id, Region: region, Epoch: epoch}.append(nil)
	b = appendDataHeader(b, &d, 1)
	b = appendMessage(b, &message{Seq: next, Group: GroupID("g"), Source: 1, GSeq: gseq, Data: []byte(data)})
	sealDatagram(b)
	return b
}

// TestForgedDataFromOutside: a datagram that borrows a sender's id but
// comes from an address no node of the view has is dropped: it cannot
// take the place of the sender's next message.
func TestForgedDataFromOutside(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 2)
	ctx := context.Background()
	sender, receiver := cl.svcs[0], cl.svcs[1]
	pub, err := dial(t, sender.Addr()).JoinMember(ctx, "g", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(true)
	if _, err := dial(t, receiver.Addr()).JoinMember(ctx, "g", rec); err != nil {
		t.Fatal(err)
	}
	waitGroupView(t, cl, "g", 2)
	for i := 0; i < 3; i++ {
		if _, err := pub.Publish(ctx, []byte(fmt.Sprint("msg ", i))); err != nil {
			t.Fatal(err)
		}
	}
	rec.waitCount(t, 3, 5*time.Second)
	b := forgeNext(t, sender, receiver, 4, "evil")
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	foreign := receiver.Stats().ForeignRegion
	conn.WriteToUDPAddrPort(b, receiver.DataAddr())
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if receiver.Stats().ForeignRegion == foreign {
			return errors.New("the forged datagram has not been turned away")
		}
		return nil
	})
	for i := 3; i < 6; i++ {
		if _, err := pub.Publish(ctx, []byte(fmt.Sprint("msg ", i))); err != nil {
			t.Fatal(err)
		}
	}
	rec.waitCount(t, 6, 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, ev := range rec.events {
		if want := fmt.Sprint("msg ", i); string(ev.Data) != want {
			t.Fatalf("event %d is %q, want %q", i, ev.Data, want)
		}
	}
	if len(rec.events) != 6 {
		t.Fatalf("%d events delivered, want 6", len(rec.events))
	}
}

// gmsRaw is a hand-driven link to the coordinator, as a service would
// have one.
type gmsRaw struct {
	conn net.Conn
	fr   *frameReader
}

// dialGMS says hello to the coordinator of cl as node id and reads its
// welcome.
func dialGMS(t *testing.T, cl *cluster, id uint64, name string) *gmsRaw {
	t.Helper()
	conn, err := net.Dial("tcp", cl.coord.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.Write(gmsHelloFrame(id, name, fmt.Sprintf("127.0.0.1:%d", 20000+id%10000)))
	g := &gmsRaw{conn: conn, fr: newFrameReader(conn, maxFrame)}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if typ, _, err := g.fr.next(); err != nil || typ != gmsWelcome {
		t.Fatalf("no welcome from the coordinator: frame type %d, %v", typ, err)
	}
	return g
}

// groups sends a groups frame: adds joined, rems left.
func (g *gmsRaw) groups(adds, rems []string) {
	e := encoder{}
	e.u32(uint32(len(adds)))
	for _, a := range adds {
		e.str(a)
	}
	e.u32(uint32(len(rems)))
	for _, r := range rems {
		e.str(r)
	}
	g.conn.Write(appendFrame(nil, gmsGroups, e.b))
}

// waitError reads frames until an error frame and returns its code and
// message.
func (g *gmsRaw) waitError(t *testing.T) (uint16, string) {
	t.Helper()
	g.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		typ, body, err := g.fr.next()
		if err != nil {
			t.Fatalf("link ended without an error frame: %v", err)
		}
		if typ == gmsError {
			d := decoder{b: body}
			code := d.u16()
			return code, d.str()
		}
	}
}

// TestCoordinatorMaxGroups: a node that asks for more groups than
// max_groups is refused with an error frame naming the setting, and its
// groups never reach a view; the names of groups that every node left
// are dropped from the coordinator's table when the next view is built.
func TestCoordinatorMaxGroups(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxGroups = 100
	cl := newCluster(t, cfg, 1)
	// Up to the cap, and leaving groups, is fine.
	g := dialGMS(t, cl, 77, "churner")
	for round := 0; round < 5; round++ {
		g.groups(groupNames(fmt.Sprint("r", round, "-"), 100), groupNames(fmt.Sprint("r", round-1, "-"), 100))
	}
	g.groups(nil, groupNames("r4-", 100))
	checkFor(t, 3*time.Second, 10*time.Millisecond, func() error {
		cl.coord.mu.Lock()
		defer cl.coord.mu.Unlock()
		if k := len(cl.coord.names); k != 0 || cl.coord.pending {
			return fmt.Errorf("the coordinator still names %d groups that no node belongs to", k)
		}
		return nil
	})
	if v := cl.coord.View(); len(v.Regions) != 0 {
		t.Fatalf("regions left in view %d: %+v", v.Number, v.Regions)
	}
	// One over the cap is refused.
	g.groups(groupNames("x", 101), nil)
	code, msg := g.waitError(t)
	if code != codeDenied || !strings.Contains(msg, "max_groups") {
		t.Fatalf("error %d %q, want code %d naming max_groups", code, msg, codeDenied)
	}
	checkFor(t, 3*time.Second, 10*time.Millisecond, func() error {
		v := cl.coord.View()
		if len(v.Nodes) != 1 || len(v.Regions) != 0 {
			return fmt.Errorf("view %d: %d nodes, %d regions", v.Number, len(v.Nodes), len(v.Regions))
		}
		return nil
	})
	c := dial(t, cl.svcs[0].Addr())
	if _, err := c.Join(context.Background(), "g", newRecorder(false)); err != nil {
		t.Fatal(err)
	}
}

// groupNames returns n group names: prefix0, prefix1, ...
func groupNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint(prefix, i)
	}
	return out
}

// TestCoordinatorViewBounded: a node whose group set would make the view
// larger than a frame may carry is refused, saying why, and the view
// the others have goes on; nodes that share a group set cost little,
// and the coordinator's reckoning of the size is the encoded size.
func TestCoordinatorViewBounded(t *testing.T) {
	old := maxViewBytes
	maxViewBytes = 2000
	t.Cleanup(func() { maxViewBytes = old })
	cl := newCluster(t, testConfig(t), 1)
	waitView := func(members int) *View {
		t.Helper()
		var v *View
		checkFor(t, 3*time.Second, 10*time.Millisecond, func() error {
			v = cl.coord.View()
			if len(v.Regions) != 1 || len(v.Regions[0].Members) != members {
				return fmt.Errorf("view %d: %d regions, want one of %d members", v.Number, len(v.Regions), members)
			}
			return nil
		})
		return v
	}
	shared := groupNames("s", 100) // 800 bytes of group ids, listed once
	dialGMS(t, cl, 77, "a").groups(shared, nil)
	dialGMS(t, cl, 78, "b").groups(shared, nil)
	v := waitView(2)
	cl.coord.mu.Lock()
	reckoned := cl.coord.viewSizeLocked(nil, 0, 0)
	cl.coord.mu.Unlock()
	if got := len(v.encode()); got != reckoned {
		t.Fatalf("view %d encodes in %d bytes; the coordinator reckons %d", v.Number, got, reckoned)
	}
	// A set of its own, as large again: over the bound.
	g := dialGMS(t, cl, 79, "c")
	g.groups(groupNames("t", 150), nil)
	code, msg := g.waitError(t)
	if code != codeDenied || !strings.Contains(msg, "view") || !strings.Contains(msg, "the same ones") {
		t.Fatalf("error %d %q, want code %d saying the view would be too large", code, msg, codeDenied)
	}
	// The same set as the others: a few bytes more, taken.
	dialGMS(t, cl, 80, "d").groups(shared, nil)
	waitView(3)
	if got := len(cl.coord.View().encode()); got > maxViewBytes {
		t.Fatalf("view of %d bytes, over the bound %d", got, maxViewBytes)
	}
}

// TestCoordinatorViewAckCapped: a node cannot acknowledge a view the
// coordinator has not issued.
func TestCoordinatorViewAckCapped(t *testing.T) {
	cl := newCluster(t, testConfig(t), 1)
	g := dialGMS(t, cl, 78, "boaster")
	g.conn.Write(appendFrame(nil, gmsViewAck, binary.BigEndian.AppendUint64(nil, math.MaxUint64)))
	// An ack of the current view, sent after it on the link, shows when
	// the coordinator has read both.
	cl.coord.mu.Lock()
	cur := cl.coord.viewNum
	cl.coord.mu.Unlock()
	g.conn.Write(appendFrame(nil, gmsViewAck, binary.BigEndian.AppendUint64(nil, cur)))
	checkFor(t, 3*time.Second, 5*time.Millisecond, func() error {
		cl.coord.mu.Lock()
		defer cl.coord.mu.Unlock()
		if n := cl.coord.nodes[78]; n != nil && n.installed < cur {
			return fmt.Errorf("the node has installed view %d, acked %d", n.installed, cur)
		}
		return nil
	})
	cl.coord.mu.Lock()
	n, num, stable := cl.coord.nodes[78], cl.coord.viewNum, cl.coord.stable
	var installed uint64
	if n != nil {
		installed = n.installed
	}
	cl.coord.mu.Unlock()
	if n == nil {
		t.Fatal("the node is not in the coordinator's table")
	}
	if installed > num || stable > num {
		t.Fatalf("node installed view %d, stable %d, but the coordinator is at view %d", installed, stable, num)
	}
}

// TestServiceRefusesBadView: a view whose region address is not a
// scoped multicast address, whose lists are out of order or repeated,
// or whose region members are not nodes of the view is refused: the
// service keeps its current view, stays on the link and installs the
// next good view.
func TestServiceRefusesBadView(t *testing.T) {
	cfg := testConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg.GMSAddress = ln.Addr().String()
	links := make(chan net.Conn, 4)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			links <- conn
		}
	}()
	s, err := NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var conn net.Conn
	select {
	case conn = <-links:
	case <-time.After(5 * time.Second):
		t.Fatal("the service did not dial the coordinator")
	}
	defer conn.Close()
	fr := newFrameReader(conn, maxFrame)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if typ, _, err := fr.next(); err != nil || typ != gmsHello {
		t.Fatalf("frame type %d, %v; want hello", typ, err)
	}
	conn.SetReadDeadline(time.Time{})
	w := encoder{}
	w.u8(ProtocolVersionMax)
	w.u32(100)
	w.u32(5)
	conn.Write(appendFrame(nil, gmsWelcome, w.b))
	go func() { // the service's heartbeats, acks and groups
		for {
			if _, _, err := fr.next(); err != nil {
				return
			}
		}
	}()
	self := NodeInfo{ID: s.id, Name: "self", Addr: s.DataAddr()}
	other := NodeInfo{ID: s.id + 1, Name: "other", Addr: netip.MustParseAddrPort("127.0.0.1:9")}
	if s.id == math.MaxUint64 {
		other.ID = 1
	}
	nodes := []NodeInfo{self, other}
	if other.ID < self.ID {
		nodes = []NodeInfo{other, self}
	}
	region := func(addr string, members ...uint64) Region {
		return Region{ID: 5, Epoch: 1, Addr: netip.MustParseAddr(addr), Members: members, Groups: []uint64{GroupID("g")}}
	}
	installed := func() uint64 {
		var n uint64
		inEngine(t, s, func(e *engine) { n = e.view.Number })
		return n
	}
	send := func(v *View) { conn.Write(appendFrame(nil, gmsView, v.encode())) }
	send(&View{Number: 1, Nodes: nodes})
	select {
	case <-s.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("the service did not install the first view")
	}
	lo, hi := nodes[0].ID, nodes[1].ID
	bad := map[string]*View{
		"unicast region address":  {Nodes: nodes, Regions: []Region{region("10.0.0.1", lo, hi)}},
		"address outside 239/8":   {Nodes: nodes, Regions: []Region{region("224.0.0.1", lo, hi)}},
		"members out of order":    {Nodes: nodes, Regions: []Region{region("239.255.0.9", hi, lo)}},
		"member repeated":         {Nodes: nodes, Regions: []Region{region("239.255.0.9", lo, lo, hi)}},
		"member not a node":       {Nodes: nodes[:1], Regions: []Region{region("239.255.0.9", lo, hi)}},
		"nodes out of order":      {Nodes: []NodeInfo{nodes[1], nodes[0]}},
		"groups out of order":     {Nodes: nodes, Regions: []Region{{ID: 5, Addr: netip.MustParseAddr("239.255.0.9"), Members: []uint64{lo, hi}, Groups: []uint64{9, 3}}}},
		"node in two regions":     {Nodes: nodes, Regions: []Region{region("239.255.0.9", lo), {ID: 6, Addr: netip.MustParseAddr("239.255.0.10"), Members: []uint64{lo}, Groups: []uint64{1}}}},
		"regions out of order":    {Nodes: nodes, Regions: []Region{{ID: 6, Addr: netip.MustParseAddr("239.255.0.10"), Members: []uint64{hi}, Groups: []uint64{1}}, region("239.255.0.9", lo)}},
		"region without a member": {Nodes: nodes, Regions: []Region{region("239.255.0.9")}},
	}
	num := uint64(1)
	for what, v := range bad {
		num++
		v.Number = num
		send(v)
		time.Sleep(30 * time.Millisecond)
		if got := installed(); got != 1 {
			t.Fatalf("%s: the service installed view %d", what, got)
		}
	}
	num++
	send(&View{Number: num, Nodes: nodes, Regions: []Region{region("239.255.0.9", lo, hi)}})
	checkFor(t, 3*time.Second, 10*time.Millisecond, func() error {
		if got := installed(); got != num {
			return fmt.Errorf("the service is at view %d, want %d", got, num)
		}
		return nil
	})
	engineAnswers(t, s, 2*time.Second)
}

// TestSourcesCapped: a sender that numbers ever new publishing
// memberships above 65,535 fills a receiver's table of them only up to
// its cap; events of further sources are refused and counted.
func TestSourcesCapped(t *testing.T) {
	old := maxSparseSources
	maxSparseSources = 50
	t.Cleanup(func() { maxSparseSources = old })
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 2)
	ctx := context.Background()
	pub, recs := joinEvery(t, cl, "g")
	sender, receiver := cl.svcs[0], cl.svcs[1]
	if _, err := pub.Publish(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	recs[1].waitCount(t, 1, 5*time.Second)
	region, epoch, _ := regionState(t, receiver)
	var streamEpoch, next uint64
	inEngine(t, receiver, func(e *engine) {
		rs := e.recvs[sender.id]
		streamEpoch, next = rs.streamEpoch, rs.next
	})
	const k = 80
	for i := uint64(0); i < k; i++ {
		d := dataBody{StreamEpoch: streamEpoch, EpochStart: 1, Hi: next + k - 1}
		b := dgHeader{Type: dgData, Sender: sender.id, Region: region, Epoch: epoch}.append(nil)
		b = appendDataHeader(b, &d, 1)
		b = appendMessage(b, &message{Seq: next + i, Group: GroupID("g"), Source: denseSources + uint32(i), GSeq: 1, Data: []byte("many")})
		sealDatagram(b)
		sender.send(b, receiver.DataAddr())
		if i%10 == 9 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	checkFor(t, 3*time.Second, 10*time.Millisecond, func() error {
		var at uint64
		inEngine(t, receiver, func(e *engine) { at = e.recvs[sender.id].next })
		if at < next+k {
			return fmt.Errorf("receiver at seq %d, want %d", at, next+k)
		}
		return nil
	})
	var sparse int
	inEngine(t, receiver, func(e *engine) { sparse = len(e.lastGSeq[sender.id].more) })
	if sparse > maxSparseSources {
		t.Fatalf("receiver notes %d sources above %d (cap %d)", sparse, denseSources-1, maxSparseSources)
	}
	if got := receiver.Stats().SourcesRefused; got != k-50 {
		t.Fatalf("SourcesRefused = %d, want %d", got, k-50)
	}
	recs[1].waitCount(t, 1+50, 5*time.Second)
}

// TestCoordinatorEmptyGroupName: a node may name a group "" in its groups
// frame (only a misbehaving one does); leaving it forgets it as any
// other, so the coordinator names no group nobody is in.
func TestCoordinatorEmptyGroupName(t *testing.T) {
	cfg := testConfig(t)
	cfg.HeartbeatInterval = 5 * time.Second // the raw link sends none
	cl := newCluster(t, cfg, 1)
	g := dialGMS(t, cl, 78, "blank")
	named := func(want ...string) func() error {
		return func() error {
			cl.coord.mu.Lock()
			defer cl.coord.mu.Unlock()
			var got []string
			for _, name := range cl.coord.names {
				got = append(got, name)
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("the coordinator names groups %q, want %q", got, want)
			}
			return nil
		}
	}
	g.groups([]string{"", "a"}, nil)
	checkFor(t, 3*time.Second, 10*time.Millisecond, named("", "a"))
	// Leaving both, then joining another: once that one is named, the
	// leaves were taken too.
	g.groups(nil, []string{"", "a"})
	g.groups([]string{"b"}, nil)
	checkFor(t, 3*time.Second, 10*time.Millisecond, named("b"))
}

// TestSendFailedCounted checks that a datagram the kernel refuses to send
// is counted in the service's stats (it is lost at the source, and comes
// again by repair), and that the rest of a batch still goes out.
func TestSendFailedCounted(t *testing.T) {
	s := newCluster(t, testConfig(t), 1).svcs[0]
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	good := sink.LocalAddr()
	bad := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0} // the kernel refuses port 0
	before := s.Stats()
	s.send([]byte("refused"), netip.MustParseAddrPort("127.0.0.1:0"))
	s.sendEach([]ipv4.Message{
		{Buffers: [][]byte{[]byte("refused")}, Addr: bad},
		{Buffers: [][]byte{[]byte("sent")}, Addr: good},
	})
	after := s.Stats()
	if got := after.SendFailed - before.SendFailed; got != 2 {
		t.Errorf("SendFailed rose by %d, want 2", got)
	}
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, _, err := sink.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "sent" {
		t.Fatalf("the datagram after the refused one: %q, %v", buf[:n], err)
	}
}

// TestJoinWithoutCoordinator: a join through a service that cannot reach
// its coordinator waits for it; when the caller gives up, the error says
// that the coordinator is the reason, and where the service looked for it.
// Once a coordinator listens there, the service links to it on its own
// and joins go through.
func TestJoinWithoutCoordinator(t *testing.T) {
	cfg := testConfig(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gms := l.Addr().String()
	l.Close()
	cfg.GMSAddress = gms
	svc := startService(t, cfg)
	c := dial(t, svc.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = c.Join(ctx, "chat", newRecorder(false))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no link to its coordinator") ||
		!strings.Contains(err.Error(), gms) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("join without a coordinator: %v", err)
	}
	st, err := c.ServiceStats(context.Background())
	if err != nil || !strings.HasPrefix(st.Coordinator, "down: ") {
		t.Fatalf("stats without a coordinator: %q %v", st.Coordinator, err)
	}

	startCoordinator(t, cfg)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st, err := c.ServiceStats(context.Background())
		if err != nil || st.Coordinator != "up" {
			return fmt.Errorf("coordinator link: %q %v", st.Coordinator, err)
		}
		return nil
	})
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := c.Join(ctx, "chat", newRecorder(false))
	if err != nil {
		t.Fatalf("join once the coordinator is up: %v", err)
	}
	m.Leave()
}
