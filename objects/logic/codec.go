package logic

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Checkpoint encodings. The first byte is a format tag so that a
// checkpoint written by one kind is refused by another.
const (
	tagList  = 0x01 // Stream: uvarint count, then uvarint seq, uvarint length, bytes each
	tagValue = 0x02 // Variable, Text: the value's bytes
)

// errCorrupt is wrapped by every checkpoint decoding error.
var errCorrupt = errors.New("corrupt checkpoint")

func encodeList(items []entry) []byte {
	n := 1 + binary.MaxVarintLen64
	for _, it := range items {
		n += 2*binary.MaxVarintLen64 + len(it.data)
	}
	b := make([]byte, 0, n)
	b = append(b, tagList)
	b = binary.AppendUvarint(b, uint64(len(items)))
	for _, it := range items {
		b = binary.AppendUvarint(b, it.seq)
		b = binary.AppendUvarint(b, uint64(len(it.data)))
		b = append(b, it.data...)
	}
	return b
}

func decodeList(b []byte) ([]entry, error) {
	if len(b) == 0 || b[0] != tagList {
		return nil, fmt.Errorf("%w: not a stream history", errCorrupt)
	}
	b = b[1:]
	count, k := binary.Uvarint(b)
	if k <= 0 || count > uint64(len(b)) {
		return nil, fmt.Errorf("%w: bad count", errCorrupt)
	}
	b = b[k:]
	items := make([]entry, 0, count)
	for i := uint64(0); i < count; i++ {
		seq, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, fmt.Errorf("%w: item %d: bad sequence number", errCorrupt, i)
		}
		b = b[k:]
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, fmt.Errorf("%w: item %d: bad length", errCorrupt, i)
		}
		b = b[k:]
		items = append(items, entry{seq, append([]byte(nil), b[:l]...)})
		b = b[l:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last item", errCorrupt, len(b))
	}
	return items, nil
}

func encodeValue(v []byte) []byte {
	b := make([]byte, 1+len(v))
	b[0] = tagValue
	copy(b[1:], v)
	return b
}

func decodeValue(b []byte) ([]byte, error) {
	if len(b) == 0 || b[0] != tagValue {
		return nil, fmt.Errorf("%w: not a value", errCorrupt)
	}
	return append([]byte(nil), b[1:]...), nil
}
