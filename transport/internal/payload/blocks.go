package payload

// Blocks cuts payload copies from shared blocks. A block lives while any
// payload cut from it does (at most BlockSize per kept payload, and
// consecutive kept payloads share blocks); each payload's capacity ends
// with it, so appending to one never touches the next. The zero value is
// ready to use.
type Blocks struct{ b []byte }

const (
	// BlockSize is the size of one shared block.
	BlockSize = 64 << 10
	// MaxShared is the largest payload cut from a block; larger ones get
	// an allocation of their own.
	MaxShared = 4 << 10
)

// Copy returns a copy of p. On a nil *Blocks every copy is an allocation
// of its own.
func (pb *Blocks) Copy(p []byte) []byte {
	if pb == nil || len(p) > MaxShared {
		return append([]byte(nil), p...)
	}
	if cap(pb.b)-len(pb.b) < len(p) {
		pb.b = make([]byte, 0, BlockSize)
	}
	n := len(pb.b)
	pb.b = append(pb.b, p...)
	return pb.b[n:len(pb.b):len(pb.b)]
}
