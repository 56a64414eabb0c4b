package qsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

func sampleData() []byte {
	d := dataBody{StreamEpoch: 3, EpochStart: 1, Hi: 2}
	b := dgHeader{Type: dgData, Sender: 7, Region: 9, Epoch: 3}.append(nil)
	b = appendDataHeader(b, &d, 2)
	b = appendMessage(b, &message{Seq: 1, Group: 5, Source: 1, GSeq: 1, Data: []byte("hello")})
	b = appendMessage(b, &message{Seq: 2, Group: 5, Source: 1, GSeq: 2, Flags: msgFlagMore, Data: []byte("world")})
	sealDatagram(b)
	return b
}

// sampleDataStarts is a data datagram that lists earlier epoch starts and
// carries a handed-over message.
func sampleDataStarts() []byte {
	d := dataBody{StreamEpoch: 3, EpochStart: 40, Hi: 41, Starts: []epochStart{{Epoch: 5, Start: 20}, {Epoch: 7, Start: 30}}}
	b := dgHeader{Type: dgData, Sender: 7, Region: 9, Epoch: 9}.append(nil)
	b = appendDataHeader(b, &d, 1)
	b = appendMessage(b, &message{Seq: 41, Group: 5, Source: 1, GSeq: 12, Flags: msgFlagHandover, Data: []byte("again")})
	sealDatagram(b)
	return b
}

func TestDataEpochStarts(t *testing.T) {
	p, err := parseDatagram(sampleDataStarts(), netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	d := p.data
	if d.Flags != dataFlagStarts || len(d.Starts) != 2 || d.Starts[1] != (epochStart{7, 30}) || len(d.Msgs) != 1 || d.Msgs[0].Flags != msgFlagHandover {
		t.Fatalf("bad parse: %+v", d)
	}
	// Out of order or too many starts, and unknown message flags, are
	// malformed.
	for _, bad := range []dataBody{
		{Starts: []epochStart{{7, 1}, {5, 1}}},
		{Starts: []epochStart{{1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 1}}},
	} {
		b := appendDataHeader(nil, &bad, 0)
		if len(bad.Starts) > maxEpochStarts {
			b[24+2+1] = byte(len(bad.Starts)) // claim more than the cap
		}
		if _, err := parseData(b); !errors.Is(err, ErrMalformed) {
			t.Fatalf("starts %v: got %v, want ErrMalformed", bad.Starts, err)
		}
	}
	b := appendDataHeader(nil, &dataBody{}, 1)
	b = appendMessage(b, &message{Seq: 1, Flags: 4})
	if _, err := parseData(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("message flag 4: got %v, want ErrMalformed", err)
	}
}

func sampleToken() []byte {
	t := tokenBody{Level: 0, Round: 4, Streams: []tokenStream{{Sender: 7, Hi: 10, Stable: 2, Slots: []tokenSlot{
		{State: slotStarted, Ack: 3, Upto: 10, Missing: []seqRange{{5, 6}, {9, 9}}},
		{State: slotUnstarted},
	}}}}
	return encodeDatagram(dgHeader{Type: dgToken, Sender: 7, Region: 9, Epoch: 3}, t.append(nil))
}

func sampleAck() []byte {
	a := ackBody{Stable: 5, Naks: []ackNak{{From: 7, To: 9, Target: 0}, {From: 11, To: 11, Target: 42}}}
	return encodeDatagram(dgHeader{Type: dgAck, Sender: 7, Region: 9, Epoch: 3}, a.append(nil))
}

func TestDatagramRoundTrip(t *testing.T) {
	p, err := parseDatagram(sampleData(), netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	if p.hdr.Sender != 7 || len(p.data.Msgs) != 2 || string(p.data.Msgs[1].Data) != "world" || p.data.Msgs[1].Flags != msgFlagMore {
		t.Fatalf("bad parse: %+v", p.data)
	}
	p, err = parseDatagram(sampleToken(), netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	sl := p.token.Streams[0].Slots[0]
	if !sl.has(4) || sl.has(5) || sl.has(9) || !sl.has(10) || sl.has(11) || p.token.Streams[0].Slots[1].has(1) {
		t.Fatalf("slot has() wrong: %+v", sl)
	}
	p, err = parseDatagram(sampleAck(), netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	if p.ack.Stable != 5 || len(p.ack.Naks) != 2 || p.ack.Naks[1].Target != 42 {
		t.Fatalf("bad ack: %+v", p.ack)
	}
}

func TestDatagramErrors(t *testing.T) {
	good := sampleData()
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"short", good[:10], ErrTruncated},
		{"foreign", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n and more bytes here"), ErrBadMagic},
		{"version", func() []byte { b := bytes.Clone(good); b[2] = 99; return b }(), ErrVersion},
		{"checksum", func() []byte { b := bytes.Clone(good); b[len(b)-1] ^= 1; return b }(), ErrChecksum},
		{"truncated body", func() []byte { b := bytes.Clone(good[:len(good)-3]); sealDatagram(b); return b }(), ErrTruncated},
		{"trailing", func() []byte { b := append(bytes.Clone(good), 1, 2, 3); sealDatagram(b); return b }(), ErrMalformed},
		{"type", func() []byte { b := bytes.Clone(good); b[3] = 100; sealDatagram(b); return b }(), ErrMalformed},
		{"huge count", func() []byte {
			b := bytes.Clone(good)
			binary.BigEndian.PutUint16(b[dgHeaderSize+25:], 60000)
			sealDatagram(b)
			return b
		}(), ErrTruncated},
	}
	for _, c := range cases {
		_, err := parseDatagram(c.b, netip.AddrPort{})
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestRanges(t *testing.T) {
	a := []seqRange{{1, 5}, {8, 10}}
	b := []seqRange{{3, 9}}
	if got := intersect(a, b); fmt.Sprint(got) != "[{3 5} {8 9}]" {
		t.Fatalf("intersect = %v", got)
	}
	if got := subtract(a, b); fmt.Sprint(got) != "[{1 2} {10 10}]" {
		t.Fatalf("subtract = %v", got)
	}
	if got := subtract([]seqRange{{1, 10}}, []seqRange{{2, 2}, {4, 5}, {10, 12}}); fmt.Sprint(got) != "[{1 1} {3 3} {6 9}]" {
		t.Fatalf("subtract = %v", got)
	}
	if got := union(a, b); fmt.Sprint(got) != "[{1 10}]" {
		t.Fatalf("union = %v", got)
	}
	if got := union([]seqRange{{1, 2}, {9, 9}}, []seqRange{{3, 4}, {6, 7}, {12, 14}}); fmt.Sprint(got) != "[{1 4} {6 7} {9 9} {12 14}]" {
		t.Fatalf("union = %v", got)
	}
	if got := union(nil, []seqRange{{2, 3}}); fmt.Sprint(got) != "[{2 3}]" {
		t.Fatalf("union = %v", got)
	}
	sl := tokenSlot{State: slotStarted, Ack: 3, Upto: 8, Missing: []seqRange{{5, 5}}}
	if got := lackingOf(&sl, 2, 10); fmt.Sprint(got) != "[{5 5} {9 10}]" {
		t.Fatalf("lackingOf = %v", got)
	}
	if p := partitions([]uint64{1, 2, 3, 4, 5, 6}, 5); len(p) != 1 || len(p[0]) != 6 {
		t.Fatalf("partitions = %v", p)
	}
	if p := partitions([]uint64{1, 2, 3, 4, 5, 6, 7, 8}, 5); len(p) != 2 || len(p[1]) != 3 {
		t.Fatalf("partitions = %v", p)
	}
}

func TestViewRoundTrip(t *testing.T) {
	v := &View{Number: 9, Nodes: []NodeInfo{{ID: 1, Name: "a", Addr: netip.MustParseAddrPort("198.18.0.1:5")}},
		Regions: []Region{{ID: 4, Epoch: 2, Addr: netip.MustParseAddr("239.1.2.3"), Members: []uint64{1}, Groups: []uint64{7, 8}}}}
	got, err := decodeView(v.encode())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(v) {
		t.Fatalf("got %v, want %v", got, v)
	}
	if _, err := decodeView(v.encode()[:20]); err == nil {
		t.Fatal("truncated view accepted")
	}
}

// TestGarbageDatagrams sends foreign, truncated, corrupt and forged
// datagrams at a running service: they are counted and ignored, and the
// service keeps delivering.
func TestGarbageDatagrams(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 2)
	ctx := context.Background()
	var recs []*recorder
	var ms []*Member
	for _, s := range cl.svcs {
		r := newRecorder(false)
		m, err := dial(t, s.Addr()).JoinMember(ctx, "g", r)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
		ms = append(ms, m)
	}
	waitMembers(t, ms, 2)
	victim := cl.svcs[1]
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	region := victim.Stats().Region
	forged := func() ([]byte, [][]byte) {
		// Valid checksum, lying content: a sender unknown to the view
		// claiming seq 1..3 of a stream in a wrong region, a message
		// with seq 0, and a token for a ring that does not exist.
		var out [][]byte
		d := dataBody{StreamEpoch: 1, EpochStart: 1, Hi: 3}
		b := dgHeader{Type: dgData, Sender: 99, Region: 12345, Epoch: 1}.append(nil)
		b = appendDataHeader(b, &d, 1)
		b = appendMessage(b, &message{Seq: 1, Group: 1, Data: []byte("evil")})
		sealDatagram(b)
		out = append(out, b)
		b = dgHeader{Type: dgData, Sender: 99, Region: region, Epoch: 1}.append(nil)
		b = appendDataHeader(b, &d, 1)
		b = appendMessage(b, &message{Seq: 0, Group: 1, Data: []byte("evil")})
		sealDatagram(b)
		out = append(out, b)
		tk := tokenBody{Level: 0, Round: 1, Ring: 77}
		out = append(out, encodeDatagram(dgHeader{Type: dgToken, Sender: 99, Region: region, Epoch: 999}, tk.append(nil)))
		ak := ackBody{Stable: 1 << 40}
		out = append(out, encodeDatagram(dgHeader{Type: dgAck, Sender: 99, Region: 555, Epoch: 1}, ak.append(nil)))
		return nil, out
	}
	_ = forged
	var junk [][]byte
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		b := make([]byte, rng.IntN(1500))
		for j := range b {
			b[j] = byte(rng.UintN(256))
		}
		junk = append(junk, b)
	}
	good := sampleData()
	junk = append(junk, good[:5], good[:40], []byte("QM"), func() []byte { b := bytes.Clone(good); b[40] ^= 0xff; return b }())
	_, lies := forged()
	junk = append(junk, lies...)
	targets := []netip.AddrPort{victim.DataAddr(), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(cfg.Port))}
	before := victim.Stats()
	for _, to := range targets {
		for _, b := range junk {
			conn.WriteToUDPAddrPort(b, to)
		}
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		st := victim.Stats()
		if st.Rejected()-before.Rejected() < 200 {
			return fmt.Errorf("rejected %d so far: %+v", st.Rejected()-before.Rejected(), st)
		}
		return nil
	})
	// Still delivering.
	for i := 0; i < 100; i++ {
		if _, err := ms[0].Publish(ctx, []byte("after")); err != nil {
			t.Fatal(err)
		}
	}
	recs[1].waitCount(t, 100, 10*time.Second)
	if p := recs[1].problems(); len(p) > 0 {
		t.Fatal(p)
	}
	st := victim.Stats()
	t.Logf("rejected: magic %d version %d checksum %d truncated %d malformed %d; foreign region %d; stale %d",
		st.BadMagic, st.BadVersion, st.BadChecksum, st.Truncated, st.Malformed, st.ForeignRegion, st.StaleToken)
	if st.ForeignRegion == 0 || st.Malformed == 0 {
		t.Fatalf("forged datagrams not counted: %+v", st)
	}
}

func FuzzDatagram(f *testing.F) {
	f.Add(sampleData())
	f.Add(sampleDataStarts())
	f.Add(sampleToken())
	f.Add(sampleAck())
	f.Add([]byte("QM\x01\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseDatagram(b, netip.AddrPort{})
		if err != nil {
			return
		}
		// Whatever parses must survive a round trip.
		var body []byte
		switch {
		case p.data != nil:
			body = appendDataHeader(nil, p.data, len(p.data.Msgs))
			for i := range p.data.Msgs {
				body = appendMessage(body, &p.data.Msgs[i])
			}
		case p.token != nil:
			body = p.token.append(nil)
		case p.ack != nil:
			body = p.ack.append(nil)
		}
		again, err := parseDatagram(encodeDatagram(p.hdr, body), netip.AddrPort{})
		if err != nil {
			t.Fatalf("re-encoded datagram does not parse: %v", err)
		}
		if fmt.Sprint(again.hdr, again.data, again.token, again.ack) != fmt.Sprint(p.hdr, p.data, p.token, p.ack) {
			t.Fatalf("round trip changed the datagram")
		}
	})
}

func FuzzView(f *testing.F) {
	v := &View{Number: 9, Nodes: []NodeInfo{{ID: 1, Name: "a", Addr: netip.MustParseAddrPort("198.18.0.1:5")}},
		Regions: []Region{{ID: 4, Epoch: 2, Addr: netip.MustParseAddr("239.1.2.3"), Members: []uint64{1}, Groups: []uint64{7, 8}}}}
	f.Add(v.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeView(b)
		if err != nil || v.check() != nil {
			return
		}
		for i := range v.Regions {
			r := &v.Regions[i]
			for _, m := range r.Members {
				if v.node(m) == nil || v.regionOf(m) != r {
					t.Fatalf("view passed the check but member %016x is not found", m)
				}
			}
			for _, g := range r.Groups {
				found := false
				for _, x := range v.regionsOfGroup(g) {
					found = found || x == r
				}
				if !found {
					t.Fatalf("view passed the check but group %016x is not found", g)
				}
			}
		}
	})
}

// FuzzFrames feeds a frame stream split in two at every point to the frame
// reader: frames are capped and never misread.
func FuzzFrames(f *testing.F) {
	var s []byte
	s = appendFrame(s, cliJoin, []byte{0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 'x'})
	s = appendFrame(s, cliPublish, []byte{0, 0, 0, 1, 'h', 'i'})
	f.Add(s, 3)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1}, 1)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		if split < 0 || split > len(b) {
			split = len(b) / 2
		}
		r := newFrameReader(&twoPart{a: b[:split], b: b[split:]}, 1024)
		for i := 0; i < 1000; i++ {
			typ, body, err := r.next()
			if err != nil {
				return
			}
			if len(body)+1 > 1024 {
				t.Fatalf("frame of %d bytes over the cap", len(body)+1)
			}
			_ = typ
		}
	})
}

// twoPart is a reader returning its input in two reads.
type twoPart struct{ a, b []byte }

func (p *twoPart) Read(out []byte) (int, error) {
	if len(p.a) > 0 {
		n := copy(out, p.a)
		p.a = p.a[n:]
		return n, nil
	}
	if len(p.b) > 0 {
		n := copy(out, p.b)
		p.b = p.b[n:]
		return n, nil
	}
	return 0, errEOF
}

var errEOF = fmt.Errorf("EOF: %w", net.ErrClosed)

// FuzzChannels: a channel list from the coordinator (or, forwarded, from a
// service) never crashes the decoder, and whatever decodes survives a
// round trip.
func FuzzChannels(f *testing.F) {
	f.Add(appendChannels(nil, []transport.ChannelInfo{{Name: "news", Members: 3}, {Name: "chat", Members: 1}}))
	f.Add(appendChannels(nil, nil))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := decoder{b: b}
		list := decodeChannels(&d)
		if d.done() != nil {
			return
		}
		d2 := decoder{b: appendChannels(nil, list)}
		again := decodeChannels(&d2)
		if d2.done() != nil || fmt.Sprint(again) != fmt.Sprint(list) {
			t.Fatalf("round trip changed %v into %v", list, again)
		}
	})
}

// TestToEscalate checks what a partition's leader asks a sender for on
// behalf of one node: what it lacked two rounds in a row, but not, while
// it is still reading, what it has not read yet.
func TestToEscalate(t *testing.T) {
	slot := func(ack, upto uint64, missing ...seqRange) tokenSlot {
		return tokenSlot{State: slotStarted, Ack: ack, Upto: upto, Missing: missing}
	}
	lack := func(sl tokenSlot, hi uint64) slotLack {
		return slotLack{lack: lackingOf(&sl, 0, hi), top: max(sl.Ack, sl.Upto)}
	}
	cases := []struct {
		name      string
		prev, now slotLack
		want      string
	}{
		// Behind a fast sender: it had read up to 100 of 200 sent, and
		// now 150 of 300. 151-200 is in its socket's queue, not lost.
		{"behind but reading", lack(slot(100, 100), 200), lack(slot(150, 150), 300), "[]"},
		// It has not moved on: the tail it lacks is lost to it.
		{"stopped", lack(slot(100, 100), 200), lack(slot(100, 100), 200), "[{101 200}]"},
		// A gap it reported below what it had seen, twice, is asked for
		// while it reads on; its unread tail is not.
		{"gap while reading", lack(slot(40, 100, seqRange{50, 60}), 200), lack(slot(40, 150, seqRange{50, 60}), 300), "[{50 60}]"},
		// A gap filled since the last round is not asked for.
		{"gap filled", lack(slot(40, 100, seqRange{50, 60}), 200), lack(slot(150, 150), 300), "[]"},
		{"first round", slotLack{}, lack(slot(100, 100), 200), "[]"},
	}
	for _, c := range cases {
		if got := fmt.Sprint(toEscalate(c.now, c.prev)); got != c.want {
			t.Errorf("%s: toEscalate = %s, want %s", c.name, got, c.want)
		}
	}
}
