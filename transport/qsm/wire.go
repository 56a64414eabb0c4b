package qsm

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"

	"github.com/liveobjects/liveobjects/transport/internal/payload"
)

// Protocol versions. A handshake carries the minimum and maximum version a
// peer speaks; both sides use the highest common one. Version 3 added the
// listing of channels (client to service to coordinator); datagrams did
// not change and still carry version 2, so that services of versions 2
// and 3 share a network.
const (
	ProtocolVersionMin = 2
	ProtocolVersionMax = 3
	datagramVersion    = 2
	listVersion        = 3 // the first version that lists channels
)

// maxFrame caps a TCP frame (type byte and body) before anything is
// allocated. Views of many thousands of groups stay well below it.
const maxFrame = 64 << 20

// maxString caps one string field.
const maxString = 4096

// maxHello caps the first frame of a link (a hello: magic, versions, a
// node id and two strings), read before the peer has said who it is.
const maxHello = 16 << 10

// encoder appends fields to a byte slice.
type encoder struct{ b []byte }

func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *encoder) bytes32(p []byte) {
	e.u32(uint32(len(p)))
	e.b = append(e.b, p...)
}
func (e *encoder) str(s string) {
	if len(s) > maxString {
		s = s[:maxString]
	}
	e.u16(uint16(len(s)))
	e.b = append(e.b, s...)
}

// decoder reads fields from a byte slice; the first error sticks and every
// later read returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail(ErrTruncated)
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8 {
	p := d.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *decoder) u16() uint16 {
	p := d.take(2)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func (d *decoder) u32() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(ErrTruncated)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) u64() uint64 {
	p := d.take(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

// bytes32 reads a length-prefixed byte string of at most max bytes and
// copies it.
func (d *decoder) bytes32(max int) []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(max) {
		d.fail(fmt.Errorf("%w: field of %d bytes over the cap of %d", ErrMalformed, n, max))
		return nil
	}
	p := d.take(int(n))
	if p == nil {
		return nil
	}
	return append([]byte(nil), p...)
}

func (d *decoder) str() string { return string(d.strBytes()) }

// strBytes reads a string field without copying it.
func (d *decoder) strBytes() []byte {
	n := d.u16()
	if int(n) > maxString {
		d.fail(fmt.Errorf("%w: string of %d bytes over the cap of %d", ErrMalformed, n, maxString))
		return nil
	}
	return d.take(int(n))
}

// count reads a u32 element count and checks it against what the rest of
// the input could hold at minSize bytes per element.
func (d *decoder) count(minSize int) int {
	n := d.u32()
	if d.err != nil {
		return 0
	}
	if minSize < 1 {
		minSize = 1
	}
	if uint64(n)*uint64(minSize) > uint64(len(d.b)) {
		d.fail(fmt.Errorf("%w: count %d larger than the input can hold", ErrTruncated, n))
		return 0
	}
	return int(n)
}

// done checks that the input was used up.
func (d *decoder) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b)))
	}
	return d.err
}

// --- TCP frames ---------------------------------------------------------

// A frame on a TCP link (client to service, service to coordinator) is a
// 4-byte big-endian length n, then n bytes: a type byte and the body.

// appendFrame appends a frame of type t with body to dst.
func appendFrame(dst []byte, t uint8, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)+1))
	dst = append(dst, t)
	return append(dst, body...)
}

// frameReader reads frames from a buffered stream.
type frameReader struct {
	r   *bufio.Reader
	max int
	buf []byte
	// hdr holds a frame's length while next reads it: on next's stack,
	// io.ReadFull (an interface call) would move it to the heap for
	// every frame.
	hdr [4]byte
}

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// buffered returns the number of bytes read from the stream and not yet
// returned as frames.
func (f *frameReader) buffered() int { return f.r.Buffered() }

// hasFrame reports whether a whole frame is buffered, so that next
// returns without reading from the stream.
func (f *frameReader) hasFrame() bool {
	if f.r.Buffered() < 4 {
		return false
	}
	hdr, _ := f.r.Peek(4)
	return uint64(f.r.Buffered()) >= 4+uint64(binary.BigEndian.Uint32(hdr))
}

// next returns the next frame's type and body. The body is valid until the
// following call.
func (f *frameReader) next() (uint8, []byte, error) {
	if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(f.hdr[:])
	if n == 0 || uint64(n) > uint64(f.max) {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes (cap %d)", ErrMalformed, n, f.max)
	}
	if int(n) <= f.r.Size() {
		// The frame fits the read buffer: return it from there.
		p, err := f.r.Peek(int(n))
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
		f.r.Discard(int(n))
		return p[0], p[1:], nil
	}
	// A larger frame goes into a buffer that grows as its bytes come, so
	// that a length on its own allocates little: a peer must send what it
	// announces.
	f.buf = f.buf[:0]
	for len(f.buf) < int(n) {
		if len(f.buf) == cap(f.buf) {
			f.buf = slices.Grow(f.buf, min(int(n)-len(f.buf), max(cap(f.buf), 64<<10)))
		}
		k, err := f.r.Read(f.buf[len(f.buf):min(int(n), cap(f.buf))])
		f.buf = f.buf[:len(f.buf)+k]
		if err != nil && len(f.buf) < int(n) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, nil, err
		}
	}
	return f.buf[0], f.buf[1:], nil
}

// --- UDP datagrams ------------------------------------------------------

// Datagram layout (big-endian):
//
//	0  magic   "QM"
//	2  version u8
//	3  type    u8 (high bit: authenticated, see dgAuth)
//	4  crc32c  u32 over the whole datagram with these 4 bytes zero
//	8  sender  u64 node id
//	16 region  u64 region id
//	24 epoch   u64 region epoch (view number of the region's last change)
//	32 body
//	   tag     16 bytes, with a key only (see dgAuth)
const (
	dgMagic0     = 'Q'
	dgMagic1     = 'M'
	dgHeaderSize = 32
)

// Datagram types. ONLY APPEND TO THIS LIST: the values are part of the
// protocol.
const (
	dgData  uint8 = 1 // messages of a sender's stream into a region
	dgToken uint8 = 2 // a token of a partition ring or of a region ring
	dgAck   uint8 = 3 // a region's stability and repair requests, to a sender
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// zeroCRC stands for a datagram's checksum field while the checksum is
// computed (a slice literal in its place went to the heap on every
// datagram read).
var zeroCRC [4]byte

// dgHeader is the fixed part of every datagram.
type dgHeader struct {
	Type   uint8
	Sender uint64
	Region uint64
	Epoch  uint64
}

func (h dgHeader) append(dst []byte) []byte {
	dst = append(dst, dgMagic0, dgMagic1, datagramVersion, h.Type, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, h.Sender)
	dst = binary.BigEndian.AppendUint64(dst, h.Region)
	return binary.BigEndian.AppendUint64(dst, h.Epoch)
}

// sealDatagram writes the checksum into a complete datagram.
func sealDatagram(b []byte) {
	binary.BigEndian.PutUint32(b[4:8], 0)
	binary.BigEndian.PutUint32(b[4:8], crc32.Checksum(b, crcTable))
}

// openDatagram checks magic, version, checksum and, with a, the tag (see
// dgAuth), and returns the header and the body (aliasing b).
func openDatagram(b []byte, a *dgAuth) (dgHeader, []byte, error) {
	var h dgHeader
	if len(b) < dgHeaderSize {
		if len(b) >= 2 && (b[0] != dgMagic0 || b[1] != dgMagic1) {
			return h, nil, ErrBadMagic
		}
		return h, nil, ErrTruncated
	}
	if b[0] != dgMagic0 || b[1] != dgMagic1 {
		return h, nil, ErrBadMagic
	}
	if b[2] < ProtocolVersionMin || b[2] > ProtocolVersionMax {
		return h, nil, fmt.Errorf("%w: datagram version %d (this build speaks %d-%d)", ErrVersion, b[2], ProtocolVersionMin, ProtocolVersionMax)
	}
	want := binary.BigEndian.Uint32(b[4:8])
	crc := crc32.Update(0, crcTable, b[:4])
	crc = crc32.Update(crc, crcTable, zeroCRC[:])
	crc = crc32.Update(crc, crcTable, b[8:])
	if crc != want {
		return h, nil, ErrChecksum
	}
	b, err := a.verify(b)
	if err != nil {
		return h, nil, err
	}
	h.Type = b[3] &^ dgAuthFlag
	h.Sender = binary.BigEndian.Uint64(b[8:16])
	h.Region = binary.BigEndian.Uint64(b[16:24])
	h.Epoch = binary.BigEndian.Uint64(b[24:32])
	return h, b[dgHeaderSize:], nil
}

// msgFlagMore marks a fragment that the next message of the stream
// continues.
const msgFlagMore = 1

// msgFlagHandover marks a message a sender sent again into the new region
// of nodes that changed region but kept the message's group (see "Region
// changes" in the package documentation). Receivers that did not carry the
// group across their own move do not deliver it.
const msgFlagHandover = 2

// message is one message of a sender's stream into a region.
type message struct {
	Seq    uint64 // position in the sender's stream into the region
	Group  uint64 // group (channel) id
	Source uint32 // the publishing membership within the sender node
	GSeq   uint64 // per (sender, source) sequence number of the event
	Flags  uint8  // msgFlagMore, msgFlagHandover
	Data   []byte // payload (a whole event or a fragment)

	// A received message's Data is cut from blk (nil: its own), which is
	// released once the engine no longer keeps the message; held marks a
	// message the engine keeps.
	blk  *payload.Block
	held bool
}

// msgOverhead is the encoded size of a message without its data.
const msgOverhead = 8 + 8 + 4 + 8 + 1 + 2

// dataHeaderSize is the size of the data body header.
const dataHeaderSize = 8 + 8 + 8 + 1 + 2

// dataFlagRepair marks a datagram of repaired messages.
const dataFlagRepair = 1

// dataFlagStarts marks a data body that lists the starts of the stream's
// recent epochs (dataBody.Starts) between its header and its messages.
const dataFlagStarts = 2

// maxEpochStarts bounds dataBody.Starts; epochStartsSize is the most room
// the list takes in a datagram.
const (
	maxEpochStarts  = 4
	epochStartsSize = 1 + maxEpochStarts*16
)

// epochStart is the first seq a sender sent in one epoch of a stream.
type epochStart struct {
	Epoch, Start uint64
}

// dataBody is the body of a dgData datagram.
type dataBody struct {
	StreamEpoch uint64 // region epoch when the stream was created
	EpochStart  uint64 // first seq the sender sent in the current epoch
	Hi          uint64 // highest seq the sender has sent
	Flags       uint8
	// Starts lists, by ascending epoch, the starts of the stream's
	// earlier epochs that are not yet stable (dataFlagStarts), so that a
	// node that entered the region in one of them starts there even when
	// the first datagram it gets is of a later epoch.
	Starts []epochStart
	Msgs   []message
}

func appendDataHeader(dst []byte, b *dataBody, count int) []byte {
	dst = binary.BigEndian.AppendUint64(dst, b.StreamEpoch)
	dst = binary.BigEndian.AppendUint64(dst, b.EpochStart)
	dst = binary.BigEndian.AppendUint64(dst, b.Hi)
	flags := b.Flags &^ dataFlagStarts
	if len(b.Starts) > 0 {
		flags |= dataFlagStarts
	}
	dst = append(dst, flags)
	dst = binary.BigEndian.AppendUint16(dst, uint16(count))
	if len(b.Starts) > 0 {
		n := min(len(b.Starts), maxEpochStarts)
		dst = append(dst, uint8(n))
		for _, es := range b.Starts[len(b.Starts)-n:] {
			dst = binary.BigEndian.AppendUint64(dst, es.Epoch)
			dst = binary.BigEndian.AppendUint64(dst, es.Start)
		}
	}
	return dst
}

func appendMessage(dst []byte, m *message) []byte {
	dst = binary.BigEndian.AppendUint64(dst, m.Seq)
	dst = binary.BigEndian.AppendUint64(dst, m.Group)
	dst = binary.BigEndian.AppendUint32(dst, m.Source)
	dst = binary.BigEndian.AppendUint64(dst, m.GSeq)
	dst = append(dst, m.Flags)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(m.Data)))
	return append(dst, m.Data...)
}

// parseData decodes a data body; message payloads are copied.
func parseData(p []byte) (dataBody, error) {
	var b dataBody
	err := parseDataInto(p, &b, nil, nil)
	return b, err
}

// parseDataInto decodes a data body into b, with the messages cut from ms
// (nil: made on their own), and payloads copied into blocks from pb (nil:
// each on its own).
func parseDataInto(p []byte, b *dataBody, ms *slab[message], pb *payload.Recycler) error {
	d := decoder{b: p}
	b.StreamEpoch = d.u64()
	b.EpochStart = d.u64()
	b.Hi = d.u64()
	b.Flags = d.u8()
	n := int(d.u16())
	if b.Flags&dataFlagStarts != 0 {
		ns := int(d.u8())
		if d.err == nil && (ns == 0 || ns > maxEpochStarts) {
			return fmt.Errorf("%w: %d epoch starts (want 1..%d)", ErrMalformed, ns, maxEpochStarts)
		}
		for i := 0; i < ns && d.err == nil; i++ {
			es := epochStart{Epoch: d.u64(), Start: d.u64()}
			if i > 0 && es.Epoch <= b.Starts[i-1].Epoch && d.err == nil {
				return fmt.Errorf("%w: epoch starts out of order", ErrMalformed)
			}
			b.Starts = append(b.Starts, es)
		}
	}
	if d.err == nil && n*msgOverhead > len(d.b) {
		return fmt.Errorf("%w: %d messages in %d bytes", ErrTruncated, n, len(d.b))
	}
	if n > 0 {
		b.Msgs = ms.take(n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		m := &b.Msgs[i]
		m.Seq = d.u64()
		m.Group = d.u64()
		m.Source = d.u32()
		m.GSeq = d.u64()
		m.Flags = d.u8()
		l := int(d.u16())
		if m.Seq == 0 && d.err == nil {
			d.fail(fmt.Errorf("%w: message with sequence number 0", ErrMalformed))
		}
		if m.Flags&^(msgFlagMore|msgFlagHandover) != 0 && d.err == nil {
			d.fail(fmt.Errorf("%w: unknown message flags %#x", ErrMalformed, m.Flags))
		}
		if data := d.take(l); data != nil {
			m.Data, m.blk = pb.Copy(data)
		} else if l == 0 {
			m.Data = []byte{}
		}
	}
	if err := d.done(); err != nil {
		return err
	}
	if b.Flags&^(dataFlagRepair|dataFlagStarts) != 0 {
		return fmt.Errorf("%w: unknown data flags %#x", ErrMalformed, b.Flags)
	}
	return nil
}

// seqRange is an inclusive range of stream sequence numbers.
type seqRange struct{ From, To uint64 }

// Slot states in a token.
const (
	slotUnvisited uint8 = 0 // the participant has not filled the slot in this round
	slotUnstarted uint8 = 1 // the participant has not yet received from the stream
	slotStarted   uint8 = 2 // Ack, Upto and Missing describe what it holds
)

// maxSlotRanges caps the missing ranges one slot reports.
const maxSlotRanges = 255

// maxTokenStreams caps the streams one token carries.
const maxTokenStreams = 256

// maxTokenSlots caps the participants of one ring.
const maxTokenSlots = 4096

// tokenSlot is what one participant of a ring reports about one stream.
type tokenSlot struct {
	State   uint8
	Ack     uint64     // every seq <= Ack is held
	Upto    uint64     // Missing describes (Ack, Upto]; above Upto is unknown (lacking)
	Missing []seqRange // ranges in (Ack, Upto] not held
}

// has reports whether the slot holds seq.
func (s *tokenSlot) has(seq uint64) bool {
	if s.State != slotStarted {
		return false
	}
	if seq <= s.Ack {
		return true
	}
	if seq > s.Upto {
		return false
	}
	for _, r := range s.Missing {
		if seq >= r.From && seq <= r.To {
			return false
		}
	}
	return true
}

// tokenStream is one sender's stream in a token.
type tokenStream struct {
	Sender uint64
	Hi     uint64 // highest seq known to the ring
	Stable uint64 // minimum Ack of the ring's previous round
	Slots  []tokenSlot
}

// Token levels.
const (
	levelPartition uint8 = 0 // ring of the nodes of one partition
	levelRegion    uint8 = 1 // ring of the leaders of a region's partitions
)

// tokenBody is the body of a dgToken datagram.
type tokenBody struct {
	Level   uint8
	Round   uint64
	Ring    uint16 // partition index (level 0) or 0
	Streams []tokenStream
}

func (t *tokenBody) append(dst []byte) []byte {
	e := encoder{b: dst}
	e.u8(t.Level)
	e.u64(t.Round)
	e.u16(t.Ring)
	e.u16(uint16(len(t.Streams)))
	for i := range t.Streams {
		s := &t.Streams[i]
		e.u64(s.Sender)
		e.u64(s.Hi)
		e.u64(s.Stable)
		e.u16(uint16(len(s.Slots)))
		for j := range s.Slots {
			sl := &s.Slots[j]
			e.u8(sl.State)
			e.u64(sl.Ack)
			e.u64(sl.Upto)
			e.u8(uint8(len(sl.Missing)))
			base := sl.Ack
			for _, r := range sl.Missing {
				// Ranges are ascending and above Ack: send the distance
				// from the previous one and the length, as varints.
				e.b = binary.AppendUvarint(e.b, r.From-base-1)
				e.b = binary.AppendUvarint(e.b, r.To-r.From)
				base = r.To
			}
		}
	}
	return e.b
}

func parseToken(p []byte) (tokenBody, error) {
	d := decoder{b: p}
	var t tokenBody
	t.Level = d.u8()
	t.Round = d.u64()
	t.Ring = d.u16()
	ns := int(d.u16())
	if d.err == nil && (ns > maxTokenStreams || ns*26 > len(d.b)) {
		return t, fmt.Errorf("%w: token with %d streams", ErrMalformed, ns)
	}
	if t.Level > levelRegion && d.err == nil {
		return t, fmt.Errorf("%w: token level %d", ErrMalformed, t.Level)
	}
	t.Streams = make([]tokenStream, ns)
	for i := 0; i < ns && d.err == nil; i++ {
		s := &t.Streams[i]
		s.Sender = d.u64()
		s.Hi = d.u64()
		s.Stable = d.u64()
		nsl := int(d.u16())
		if d.err == nil && (nsl > maxTokenSlots || nsl*18 > len(d.b)) {
			return t, fmt.Errorf("%w: token stream with %d slots", ErrMalformed, nsl)
		}
		s.Slots = make([]tokenSlot, nsl)
		for j := 0; j < nsl && d.err == nil; j++ {
			sl := &s.Slots[j]
			sl.State = d.u8()
			sl.Ack = d.u64()
			sl.Upto = d.u64()
			nr := int(d.u8())
			if sl.State > slotStarted && d.err == nil {
				return t, fmt.Errorf("%w: slot state %d", ErrMalformed, sl.State)
			}
			if nr > maxSlotRanges && d.err == nil {
				return t, fmt.Errorf("%w: slot with %d ranges", ErrMalformed, nr)
			}
			base := sl.Ack
			for k := 0; k < nr && d.err == nil; k++ {
				gap, length := d.uvarint(), d.uvarint()
				from := base + gap + 1
				to := from + length
				if d.err == nil && (from <= base || to < from || to > sl.Upto) {
					d.fail(fmt.Errorf("%w: bad missing range after %d (+%d, %d long)", ErrMalformed, base, gap, length))
				}
				sl.Missing = append(sl.Missing, seqRange{from, to})
				base = to
			}
		}
	}
	return t, d.done()
}

// ackTarget says where a sender sends the messages of a nak range.
type ackNak struct {
	From, To uint64
	Target   uint64 // node to unicast to, or 0 to multicast into the region
}

// maxAckNaks caps the repair requests of one ack.
const maxAckNaks = 256

// ackBody is the body of a dgAck datagram, sent by a region's leader to a
// sender: every member of the region holds every seq <= Stable.
type ackBody struct {
	Stable uint64
	Naks   []ackNak
}

func (a *ackBody) append(dst []byte) []byte {
	e := encoder{b: dst}
	e.u64(a.Stable)
	e.u16(uint16(len(a.Naks)))
	for _, n := range a.Naks {
		e.u64(n.From)
		e.u64(n.To)
		e.u64(n.Target)
	}
	return e.b
}

func parseAck(p []byte) (ackBody, error) {
	d := decoder{b: p}
	var a ackBody
	a.Stable = d.u64()
	n := int(d.u16())
	if d.err == nil && (n > maxAckNaks || n*24 > len(d.b)) {
		return a, fmt.Errorf("%w: ack with %d naks", ErrMalformed, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		k := ackNak{From: d.u64(), To: d.u64(), Target: d.u64()}
		if k.From > k.To || k.From == 0 || k.To-k.From > math.MaxUint32 {
			d.fail(fmt.Errorf("%w: bad nak range %d-%d", ErrMalformed, k.From, k.To))
		}
		a.Naks = append(a.Naks, k)
	}
	return a, d.done()
}

// sealedDatagram builds a datagram from a header and a body and seals it
// with a (nil: checksum only).
func sealedDatagram(h dgHeader, body []byte, a *dgAuth) []byte {
	b := make([]byte, 0, dgHeaderSize+len(body)+a.overhead())
	b = h.append(b)
	b = append(b, body...)
	return a.seal(b)
}
