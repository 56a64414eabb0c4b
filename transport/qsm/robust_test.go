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
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
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
	time.Sleep(100 * time.Millisecond)
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
	d := dataBody{StreamEpoch: streamEpoch, EpochStart: 1, Hi: math.MaxUint64}
	b := dgHeader{Type: dgData, Sender: sender.id, Region: region, Epoch: epoch}.append(nil)
	b = appendDataHeader(b, &d, 0)
	sealDatagram(b)
	sender.send(b, receiver.DataAddr())
	for k := uint64(0); k < 20; k++ {
		d := dataBody{StreamEpoch: streamEpoch, EpochStart: 1, Hi: next + 1<<30}
		b := dgHeader{Type: dgData, Sender: sender.id, Region: region, Epoch: epoch}.append(nil)
		b = appendDataHeader(b, &d, 1)
		b = appendMessage(b, &message{Seq: next + 1<<20 + k, Group: GroupID("g"), Source: 1, GSeq: 1 << 40, Data: []byte("evil")})
		sealDatagram(b)
		sender.send(b, receiver.DataAddr())
	}
	time.Sleep(200 * time.Millisecond)
	engineAnswers(t, sender, 2*time.Second)
	engineAnswers(t, receiver, 2*time.Second)
	inEngine(t, receiver, func(e *engine) {
		rs := e.recvs[sender.id]
		if lim := rs.next + uint64(4*cfg.Window); rs.hi > lim {
			t.Errorf("receiver takes the stream to reach seq %d (next %d)", rs.hi, rs.next)
		}
		if len(rs.pending) > 0 {
			t.Errorf("receiver queued %d messages far beyond its window", len(rs.pending))
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
	cfg := testConfig(t)
	cfg.ClientCredits = 8
	cfg.Window = 16
	cl := newCluster(t, cfg, 2)
	ctx := context.Background()
	svc, peer := cl.svcs[0], cl.svcs[1]
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
	region, epoch, _ := regionState(t, receiver)
	var streamEpoch, next uint64
	inEngine(t, receiver, func(e *engine) {
		rs := e.recvs[sender.id]
		streamEpoch, next = rs.streamEpoch, rs.next
	})
	d := dataBody{StreamEpoch: streamEpoch, EpochStart: 1, Hi: next}
	b := dgHeader{Type: dgData, Sender: sender.id, Region: region, Epoch: epoch}.append(nil)
	b = appendDataHeader(b, &d, 1)
	b = appendMessage(b, &message{Seq: next, Group: GroupID("g"), Source: 1, GSeq: 4, Data: []byte("evil")})
	sealDatagram(b)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.WriteToUDPAddrPort(b, receiver.DataAddr())
	time.Sleep(50 * time.Millisecond)
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
