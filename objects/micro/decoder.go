package micro

import (
	"encoding/binary"
	"fmt"
)

// decoder reads big-endian fields from a byte slice. The first short read
// sets err; later reads return zero values. It never allocates on the
// peer's say-so: callers check counts against remaining() first.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: message truncated", ErrProtocol)
	}
}

func (d *decoder) remaining() int { return len(d.b) }

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.fail()
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8 {
	p := d.bytes(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *decoder) u16() uint16 {
	p := d.bytes(2)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func (d *decoder) u32() uint32 {
	p := d.bytes(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (d *decoder) u64() uint64 {
	p := d.bytes(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", ErrProtocol)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) token() Token {
	var t Token
	copy(t[:], d.bytes(TokenSize))
	return t
}
