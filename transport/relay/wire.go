package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Protocol versions spoken by this package. A client offers [min, max] in
// its hello; the server picks the highest version both support.
const (
	ProtocolVersionMin = 1
	ProtocolVersionMax = 1
)

// magic opens every hello frame so that a stray client of another protocol
// is told apart from a broken one.
var magic = [4]byte{'L', 'O', 'R', 'Y'}

// Frame types. ONLY APPEND TO THIS LIST: the numeric values are part of the
// protocol itself.
const (
	tHello       byte = 1  // c->s: magic, min u16, max u16, clientID, name, secret
	tWelcome     byte = 2  // s->c: version u16, epoch u64, maxEvent u32, maxFrame u32
	tError       byte = 3  // s->c: reqID u64, code u16, msg
	tJoin        byte = 4  // c->s: reqID u64, channel, token, flags u8, epoch u64, from u64
	tJoined      byte = 5  // s->c: reqID u64, channel, lastSeq u64
	tLeave       byte = 6  // c->s: reqID u64, channel
	tPublish     byte = 7  // c->s: counter u64, channel, data
	tAck         byte = 8  // s->c: counter u64, seq u64
	tEvent       byte = 9  // s->c: channel, seq u64, sender, data
	tCkptReq     byte = 10 // s->c: channel, cpID u64
	tCkptData    byte = 11 // c->s: channel, cpID u64, seq u64, total u64, flags u8, chunk
	tState       byte = 12 // s->c: channel, seq u64, total u64, flags u8, chunk
	tList        byte = 13 // c->s: reqID u64
	tChannels    byte = 14 // s->c: reqID u64, n u32, n x channelInfo
	tCreate      byte = 15 // c->s: reqID u64, channelInfo
	tRemove      byte = 16 // c->s: reqID u64, channel
	tOK          byte = 17 // s->c: reqID u64
	tChange      byte = 18 // s->c: kind u8, channelInfo
	tResync      byte = 19 // c->s: channel, received u64
	tMemberError byte = 20 // s->c: channel, code u16, msg
	tPing        byte = 21 // either way: token u64
	tPong        byte = 22 // either way: token u64
	tAckRange    byte = 23 // s->c: counter u64, seq u64, n u32: counters counter..counter+n-1 got seq..seq+n-1
)

// frameNames names frame types in errors and logs.
var frameNames = map[byte]string{
	tHello: "hello", tWelcome: "welcome", tError: "error", tJoin: "join",
	tJoined: "joined", tLeave: "leave", tPublish: "publish", tAck: "ack",
	tEvent: "event", tCkptReq: "checkpoint-request", tCkptData: "checkpoint-data",
	tState: "state", tList: "list", tChannels: "channels", tCreate: "create",
	tRemove: "remove", tOK: "ok", tChange: "change", tResync: "resync",
	tMemberError: "member-error", tPing: "ping", tPong: "pong", tAckRange: "ack-range",
}

func frameName(t byte) string {
	if n, ok := frameNames[t]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", t)
}

// Flags of tJoin.
const (
	joinResume      byte = 1 << iota // from and epoch are meaningful
	joinPublishOnly                  // the member publishes only: no state, no events
)

// Flags of tCkptData and tState.
const (
	chunkLast   byte = 1 << iota // the last chunk of this checkpoint
	chunkFailed                  // tCkptData: the member has no checkpoint to give
	stateBehind                  // tState: sent because the member fell behind
	stateNone                    // tState: no checkpoint; continue after seq
)

// Kinds of tChange.
const (
	changeAdded   byte = 1
	changeRemoved byte = 2
)

// Sizes.
const (
	// DefaultMaxEvent is the largest event payload accepted by default.
	DefaultMaxEvent = 1 << 20
	// chunkSize is the size of checkpoint chunks on the wire.
	chunkSize = 1 << 20
	// frameOverhead bounds everything a frame carries besides its payload.
	frameOverhead = 64 << 10
	// helloMax bounds frames before the handshake completes.
	helloMax = 16 << 10
	// maxString bounds channel names, tokens and other strings.
	maxString = 4096
)

// maxFrameFor returns the largest frame for a given maximum event size.
func maxFrameFor(maxEvent int) int {
	return max(maxEvent, chunkSize) + frameOverhead
}

// errShort is returned by the decoder when a body ends too early.
var errShort = errors.New("frame body too short")

// appendFrame appends a frame header (length, type) and returns the buffer
// and the offset of the length field, to be fixed by endFrame.
func beginFrame(b []byte, typ byte) ([]byte, int) {
	off := len(b)
	b = append(b, 0, 0, 0, 0, typ)
	return b, off
}

// endFrame writes the frame length at off.
func endFrame(b []byte, off int) []byte {
	binary.BigEndian.PutUint32(b[off:], uint32(len(b)-off-4))
	return b
}

func putU8(b []byte, v byte) []byte    { return append(b, v) }
func putU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func putU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func putU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func putStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}
func putBytes(b []byte, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// dec reads a frame body. The first error sticks; later reads return zero
// values, so a decoder is checked once at the end.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.b = nil
}

func (d *dec) u8() byte {
	if len(d.b) < 1 {
		d.fail(errShort)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) u16() uint16 {
	if len(d.b) < 2 {
		d.fail(errShort)
		return 0
	}
	v := binary.BigEndian.Uint16(d.b)
	d.b = d.b[2:]
	return v
}

func (d *dec) u32() uint32 {
	if len(d.b) < 4 {
		d.fail(errShort)
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *dec) u64() uint64 {
	if len(d.b) < 8 {
		d.fail(errShort)
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// raw returns the next length-prefixed field, aliasing the body.
func (d *dec) raw(limit int) []byte {
	n, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.fail(errShort)
		return nil
	}
	if n > uint64(limit) || n > math.MaxInt32 {
		d.fail(fmt.Errorf("field of %d bytes exceeds limit %d", n, limit))
		return nil
	}
	d.b = d.b[k:]
	if uint64(len(d.b)) < n {
		d.fail(errShort)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) str() string { return string(d.raw(maxString)) }

// bytes returns a copy of the next length-prefixed field.
func (d *dec) bytes(limit int) []byte {
	v := d.raw(limit)
	if v == nil {
		return nil
	}
	return append([]byte(nil), v...)
}

// end reports the sticky error, or an error when bytes remain.
func (d *dec) end() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%d unexpected bytes at end of frame body", len(d.b))
	}
	return nil
}

// Parser splits a byte stream into frames. It keeps its state across calls
// to Feed, so input may arrive in pieces of any size. A frame's declared
// length is checked against the limit before anything is allocated.
type Parser struct {
	max  int
	hdr  [4]byte
	nhdr int
	buf  []byte // the frame being assembled (type + body)
	need int    // bytes still missing from buf
}

// NewParser returns a parser accepting frames of at most max bytes (type
// byte plus body).
func NewParser(max int) *Parser { return &Parser{max: max} }

// SetMax changes the frame size limit (after the handshake).
func (p *Parser) SetMax(max int) { p.max = max }

// Feed consumes in and calls fn for every complete frame with its type and
// body. The body aliases internal or input memory and is valid only during
// the call. Feed stops at the first error from fn or from the framing; the
// parser must not be used after a framing error.
func (p *Parser) Feed(in []byte, fn func(typ byte, body []byte) error) error {
	for len(in) > 0 {
		if p.need == 0 && p.buf == nil {
			// Reading a header.
			if p.nhdr == 0 && len(in) >= 4 {
				n := binary.BigEndian.Uint32(in)
				if err := p.check(n); err != nil {
					return err
				}
				if len(in) >= 4+int(n) {
					// Whole frame in the input: no copy.
					frame := in[4 : 4+int(n)]
					in = in[4+int(n):]
					if err := fn(frame[0], frame[1:]); err != nil {
						return err
					}
					continue
				}
				p.start(n)
				in = in[4:]
				continue
			}
			k := copy(p.hdr[p.nhdr:], in)
			p.nhdr += k
			in = in[k:]
			if p.nhdr < 4 {
				return nil
			}
			p.nhdr = 0
			n := binary.BigEndian.Uint32(p.hdr[:])
			if err := p.check(n); err != nil {
				return err
			}
			p.start(n)
			continue
		}
		k := min(p.need, len(in))
		p.buf = append(p.buf, in[:k]...)
		p.need -= k
		in = in[k:]
		if p.need == 0 {
			frame := p.buf
			p.buf = nil
			if err := fn(frame[0], frame[1:]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *Parser) check(n uint32) error {
	if n == 0 {
		return &Error{Code: CodeProtocol, Msg: "empty frame"}
	}
	if uint64(n) > uint64(p.max) {
		return &Error{Code: CodeTooLarge, Msg: fmt.Sprintf("frame of %d bytes exceeds the limit of %d", n, p.max)}
	}
	return nil
}

func (p *Parser) start(n uint32) {
	// Allocate in steps for large frames so a peer that announces a big
	// frame and sends nothing does not pin the whole allocation at once.
	p.buf = make([]byte, 0, min(int(n), 1<<20))
	p.need = int(n)
}

// Buffered reports how many bytes of an incomplete frame are held.
func (p *Parser) Buffered() int { return p.nhdr + len(p.buf) }

func putUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
