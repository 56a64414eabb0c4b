package micro

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"slices"
)

// Peer wire protocol. Every frame is
//
//	type u8 | request id u32 | body length u32 | body
//
// The length is checked against MaxFrame before anything is allocated. A
// connection opens with HELLO / HELLO-ACK carrying the protocol versions
// and the caller's peer address; then the caller sends requests and reads
// one answer per request, with the same id.

// Message types. ONLY APPEND TO THIS LIST: the numeric values are part of
// the protocol itself.
const (
	msgHello       = 1  // magic "LOMO", min u8, max u8, peer address (18)
	msgHelloAck    = 2  // version u8, peer address (18)
	msgFetch       = 3  // token
	msgObject      = 4  // object encoding
	msgBusy        = 5  // ditto-list
	msgError       = 6  // code u16, text (u16 length), ditto-list
	msgAssent      = 7  // root token, object token, flags u8, peers, reconciliation message
	msgAssentReply = 8  // flags u8, peers, reconciliation message (may be empty)
	msgOffer       = 9  // root token, count u16, tokens
	msgWant        = 10 // count u16, indexes u16
	msgPush        = 11 // root token, count u16, (length u32, object)*
	msgPushReply   = 12 // accepted u16
)

// Protocol versions this build speaks.
const (
	protoMin = 1
	protoMax = 1
)

const (
	// MaxFrame bounds a frame body.
	MaxFrame = 4 << 20
	// frameHeader is the size of a frame header.
	frameHeader = 9
	// maxAddrList bounds ditto-lists and peer lists on the wire.
	maxAddrList = 32
	// maxBatch bounds tokens in an offer and objects in a push.
	maxBatch   = 256
	helloMagic = "LOMO"
)

// frame is one message on the wire.
type frame struct {
	typ  uint8
	id   uint32
	body []byte
}

func appendFrame(b []byte, typ uint8, id uint32, body []byte) []byte {
	b = append(b, typ)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...)
}

func writeFrame(w io.Writer, typ uint8, id uint32, body []byte) error {
	if len(body) > MaxFrame {
		return fmt.Errorf("micro: write frame: body of %d bytes: %w", len(body), ErrTooLarge)
	}
	_, err := w.Write(appendFrame(make([]byte, 0, frameHeader+len(body)), typ, id, body))
	return err
}

// frameChunk is the body size readFrame allocates before any of the body
// has arrived; larger bodies grow with the bytes actually received.
const frameChunk = 64 << 10

// readFrame reads one frame. It works with readers that return one byte
// at a time, and rejects a body longer than limit before allocating it.
// It does not trust the announced length for its allocation either: a
// body beyond frameChunk grows (doubling) as its bytes arrive, so that a
// peer that announces a large frame and sends little pins little memory.
func readFrame(r io.Reader, limit int) (frame, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	f := frame{typ: h[0], id: binary.BigEndian.Uint32(h[1:5])}
	n := binary.BigEndian.Uint32(h[5:9])
	if uint64(n) > uint64(limit) {
		return f, fmt.Errorf("micro: frame of %d bytes (limit %d): %w", n, limit, ErrTooLarge)
	}
	body := make([]byte, 0, min(int(n), frameChunk))
	for len(body) < int(n) {
		if len(body) == cap(body) {
			body = slices.Grow(body, min(int(n)-len(body), len(body)))
		}
		k, err := io.ReadFull(r, body[len(body):min(int(n), cap(body))])
		body = body[:len(body)+k]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			f.body = body
			return f, err
		}
	}
	f.body = body
	return f, nil
}

func appendAddrs(b []byte, as []netip.AddrPort) []byte {
	if len(as) > maxAddrList {
		as = as[:maxAddrList]
	}
	b = append(b, byte(len(as)))
	for _, a := range as {
		var x [18]byte
		addrPortTo18(x[:], a)
		b = append(b, x[:]...)
	}
	return b
}

func (d *decoder) addrs() []netip.AddrPort {
	n := int(d.u8())
	if n > maxAddrList {
		d.err = fmt.Errorf("%w: list of %d addresses", ErrTooLarge, n)
		return nil
	}
	var as []netip.AddrPort
	for i := 0; i < n && d.err == nil; i++ {
		a := addrPortFrom18(d.bytes(18))
		if d.err == nil && a.IsValid() && a.Port() != 0 {
			as = append(as, a)
		}
	}
	return as
}

func (d *decoder) done() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrProtocol, len(d.b))
	}
	return nil
}

type helloMsg struct {
	min, max uint8
	addr     netip.AddrPort
}

func (m helloMsg) encode() []byte {
	b := append([]byte(helloMagic), m.min, m.max)
	var x [18]byte
	addrPortTo18(x[:], m.addr)
	return append(b, x[:]...)
}

func decodeHello(b []byte) (helloMsg, error) {
	d := decoder{b: b}
	var m helloMsg
	if string(d.bytes(4)) != helloMagic {
		return m, fmt.Errorf("%w: not a micro object peer", ErrProtocol)
	}
	m.min, m.max = d.u8(), d.u8()
	m.addr = addrPortFrom18(d.bytes(18))
	return m, d.done()
}

type helloAck struct {
	version uint8
	addr    netip.AddrPort
}

func (m helloAck) encode() []byte {
	var x [18]byte
	addrPortTo18(x[:], m.addr)
	return append([]byte{m.version}, x[:]...)
}

func decodeHelloAck(b []byte) (helloAck, error) {
	d := decoder{b: b}
	m := helloAck{version: d.u8(), addr: addrPortFrom18(d.bytes(18))}
	return m, d.done()
}

type errorMsg struct {
	code  Code
	text  string
	ditto []netip.AddrPort
}

func (m errorMsg) encode() []byte {
	t := m.text
	if len(t) > 1024 {
		t = t[:1024]
	}
	b := binary.BigEndian.AppendUint16(nil, uint16(m.code))
	b = binary.BigEndian.AppendUint16(b, uint16(len(t)))
	b = append(b, t...)
	return appendAddrs(b, m.ditto)
}

func decodeError(b []byte) (errorMsg, error) {
	d := decoder{b: b}
	m := errorMsg{code: Code(d.u16())}
	n := int(d.u16())
	m.text = string(d.bytes(n))
	m.ditto = d.addrs()
	return m, d.done()
}

// assentFlooding in assentMsg.flags: the sender floods root itself.
const assentFlooding = 1

type assentMsg struct {
	root, obj Token
	flags     uint8
	peers     []netip.AddrPort
	recon     []byte
}

func (m assentMsg) encode() []byte {
	b := append(append([]byte{}, m.root[:]...), m.obj[:]...)
	b = append(b, m.flags)
	b = appendAddrs(b, m.peers)
	return append(b, m.recon...)
}

func decodeAssent(b []byte) (assentMsg, error) {
	d := decoder{b: b}
	m := assentMsg{root: d.token(), obj: d.token(), flags: d.u8()}
	if m.flags&^assentFlooding != 0 {
		return m, fmt.Errorf("%w: assent flags %#x", ErrProtocol, m.flags)
	}
	m.peers = d.addrs()
	if d.err != nil {
		return m, d.err
	}
	m.recon = d.b
	return m, nil
}

type assentReply struct {
	accepted bool
	peers    []netip.AddrPort
	recon    []byte
}

func (m assentReply) encode() []byte {
	var f byte
	if m.accepted {
		f = 1
	}
	b := appendAddrs([]byte{f}, m.peers)
	return append(b, m.recon...)
}

func decodeAssentReply(b []byte) (assentReply, error) {
	d := decoder{b: b}
	f := d.u8()
	if f > 1 {
		return assentReply{}, fmt.Errorf("%w: assent flags %#x", ErrProtocol, f)
	}
	m := assentReply{accepted: f == 1, peers: d.addrs()}
	if d.err != nil {
		return m, d.err
	}
	if len(d.b) > 0 {
		m.recon = d.b
	}
	return m, nil
}

type offerMsg struct {
	root Token
	toks []Token
}

func (m offerMsg) encode() []byte {
	b := append([]byte{}, m.root[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.toks)))
	for _, t := range m.toks {
		b = append(b, t[:]...)
	}
	return b
}

func decodeOffer(b []byte) (offerMsg, error) {
	d := decoder{b: b}
	m := offerMsg{root: d.token()}
	n := int(d.u16())
	if n > maxBatch || n*TokenSize > d.remaining() {
		return m, fmt.Errorf("%w: offer of %d tokens", ErrProtocol, n)
	}
	m.toks = make([]Token, n)
	for i := range m.toks {
		m.toks[i] = d.token()
	}
	return m, d.done()
}

func encodeWant(idx []uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(idx)))
	for _, i := range idx {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func decodeWant(b []byte, offered int) ([]uint16, error) {
	d := decoder{b: b}
	n := int(d.u16())
	if n > offered || n*2 > d.remaining() {
		return nil, fmt.Errorf("%w: want of %d", ErrProtocol, n)
	}
	idx := make([]uint16, n)
	for i := range idx {
		idx[i] = d.u16()
		if int(idx[i]) >= offered {
			return nil, fmt.Errorf("%w: want index %d of %d", ErrProtocol, idx[i], offered)
		}
	}
	return idx, d.done()
}

type pushMsg struct {
	root Token
	objs []*Object
}

func (m pushMsg) encode() []byte {
	b := append([]byte{}, m.root[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.objs)))
	for _, o := range m.objs {
		b = binary.BigEndian.AppendUint32(b, uint32(o.Size()))
		b = o.appendTo(b)
	}
	return b
}

func decodePush(b []byte) (pushMsg, error) {
	d := decoder{b: b}
	m := pushMsg{root: d.token()}
	n := int(d.u16())
	if n > maxBatch || n*(4+objectFixed) > d.remaining() {
		return m, fmt.Errorf("%w: push of %d objects", ErrProtocol, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		l := d.u32()
		if l > uint32(d.remaining()) {
			return m, fmt.Errorf("%w: object of %d bytes", ErrProtocol, l)
		}
		o := new(Object)
		if err := o.UnmarshalBinary(d.bytes(int(l))); err != nil {
			return m, err
		}
		m.objs = append(m.objs, o)
	}
	return m, d.done()
}

// decodeMessage decodes the body of any message type; it is the entry
// point of the fuzz target.
func decodeMessage(f frame) (any, error) {
	switch f.typ {
	case msgHello:
		return decodeHello(f.body)
	case msgHelloAck:
		return decodeHelloAck(f.body)
	case msgFetch:
		return TokenFromBytes(f.body)
	case msgObject:
		o := new(Object)
		return o, o.UnmarshalBinary(f.body)
	case msgBusy:
		d := decoder{b: f.body}
		as := d.addrs()
		return as, d.done()
	case msgError:
		return decodeError(f.body)
	case msgAssent:
		m, err := decodeAssent(f.body)
		if err != nil {
			return m, err
		}
		_, err = decodeRecon(m.recon)
		return m, err
	case msgAssentReply:
		m, err := decodeAssentReply(f.body)
		if err != nil || m.recon == nil {
			return m, err
		}
		_, err = decodeRecon(m.recon)
		return m, err
	case msgOffer:
		return decodeOffer(f.body)
	case msgWant:
		return decodeWant(f.body, maxBatch)
	case msgPush:
		return decodePush(f.body)
	case msgPushReply:
		d := decoder{b: f.body}
		n := d.u16()
		return n, d.done()
	}
	return nil, fmt.Errorf("%w: message type %d", ErrProtocol, f.typ)
}
