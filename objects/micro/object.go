package micro

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// MaxPayload is the largest sealed payload of a micro object.
const MaxPayload = 1 << 20

// MaxPlain is the largest plain payload a new object takes: sealing adds
// up to 64 bytes to what MaxPayload holds.
const MaxPlain = MaxPayload - 64

// objectFixed is the encoded size of an object without its payload.
const objectFixed = 1 + 8 + 18 + 1 + 32 + 16 + 4 + ed25519.SignatureSize

// objectVersion is the encoding version of Object.MarshalBinary.
const objectVersion = 1

// Flag bits of Object.Flags.
const (
	// FlagSealed: the payload is sealed with AES-256-GCM.
	FlagSealed = 1 << 0
	// FlagSealedCluster: the cluster's members are sealed too (see
	// NewSealedEntry); servers reconcile such a cluster but cannot read
	// it, so flooding levels above 0 do not follow it.
	FlagSealedCluster = 1 << 1
)

// Object is the immutable distributed part of a micro object as servers
// see it: header fields, the sealed payload and the writer's signature.
// The mutable part, the cluster, lives apart (see Entry). An Object is
// immutable after creation; do not modify its fields.
type Object struct {
	// Expire is the copy-expire date (millisecond precision).
	Expire time.Time
	// Home is the contact address of the home server.
	Home netip.AddrPort
	// Flags holds Flag bits.
	Flags uint8
	// Writer is the Ed25519 public key that signs the object and the
	// entries of its cluster.
	Writer [32]byte
	// Salt makes tokens unique for equal contents.
	Salt [16]byte
	// Payload is the sealed payload.
	Payload []byte
	// Sig is the writer's signature over the token.
	Sig [ed25519.SignatureSize]byte
}

// NewObject seals plain with keys and signs the result. The object's home
// is home and its copy-expire date expire (rounded down to milliseconds).
func NewObject(keys Keys, home netip.AddrPort, expire time.Time, plain []byte) (*Object, error) {
	return newObject(keys, home, expire, plain, FlagSealed)
}

// NewObjectSealedCluster is NewObject for an object whose cluster members
// are sealed as well (FlagSealedCluster).
func NewObjectSealedCluster(keys Keys, home netip.AddrPort, expire time.Time, plain []byte) (*Object, error) {
	return newObject(keys, home, expire, plain, FlagSealed|FlagSealedCluster)
}

func newObject(keys Keys, home netip.AddrPort, expire time.Time, plain []byte, flags uint8) (*Object, error) {
	if len(keys.Writer) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: no writer key", ErrBadKeys)
	}
	if len(plain) > MaxPlain {
		return nil, fmt.Errorf("micro: new object: payload of %d bytes: %w (max %d)", len(plain), ErrTooLarge, MaxPlain)
	}
	o := &Object{Expire: time.UnixMilli(expire.UnixMilli()), Home: home, Flags: flags, Writer: keys.Public()}
	if _, err := rand.Read(o.Salt[:]); err != nil {
		return nil, fmt.Errorf("micro: new object: %w", err)
	}
	if err := keys.seal(o, plain); err != nil {
		return nil, err
	}
	t := o.Token()
	copy(o.Sig[:], ed25519.Sign(keys.Writer, objectSigMsg(t)))
	return o, nil
}

func objectSigMsg(t Token) []byte {
	return append([]byte("liveobjects/mo object v1\x00"), t[:]...)
}

// Token computes the object's token.
func (o *Object) Token() Token { return tokenFor(o) }

// Verify checks that o is the object named by want and that its signature
// holds. It returns an error wrapping ErrBadObject otherwise.
func (o *Object) Verify(want Token) error {
	got := o.Token()
	if got != want {
		return fmt.Errorf("%w: object hashes to %s, not %s", ErrBadObject, got.Short(), want.Short())
	}
	return o.verifySig(got)
}

// Matches checks only that o hashes to want (every field but the
// signature). Verify also checks the signature; servers verify fully
// before they cache anything.
func (o *Object) Matches(want Token) error {
	if got := o.Token(); got != want {
		return fmt.Errorf("%w: object hashes to %s, not %s", ErrBadObject, got.Short(), want.Short())
	}
	return nil
}

func (o *Object) verifySig(t Token) error {
	if !ed25519.Verify(ed25519.PublicKey(o.Writer[:]), objectSigMsg(t), o.Sig[:]) {
		return fmt.Errorf("%w: bad writer signature on %s", ErrBadObject, t.Short())
	}
	return nil
}

// Open verifies and decrypts the payload with keys.
func (o *Object) Open(keys Keys) ([]byte, error) {
	if o.Flags&FlagSealed == 0 {
		return append([]byte(nil), o.Payload...), nil
	}
	return keys.open(o)
}

// Size is the encoded size of o in bytes.
func (o *Object) Size() int { return objectFixed + len(o.Payload) }

// MarshalBinary encodes the object.
func (o *Object) MarshalBinary() ([]byte, error) { return o.appendTo(nil), nil }

func (o *Object) appendTo(b []byte) []byte {
	b = append(b, objectVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(o.Expire.UnixMilli()))
	var ap [18]byte
	addrPortTo18(ap[:], o.Home)
	b = append(b, ap[:]...)
	b = append(b, o.Flags)
	b = append(b, o.Writer[:]...)
	b = append(b, o.Salt[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(o.Payload)))
	b = append(b, o.Payload...)
	return append(b, o.Sig[:]...)
}

// UnmarshalBinary decodes an object; it copies from b.
func (o *Object) UnmarshalBinary(b []byte) error {
	if len(b) < objectFixed {
		return fmt.Errorf("%w: object of %d bytes is shorter than %d", ErrBadObject, len(b), objectFixed)
	}
	if b[0] != objectVersion {
		return fmt.Errorf("%w: object encoding version %d", ErrVersionMismatch, b[0])
	}
	ms := binary.BigEndian.Uint64(b[1:9])
	if ms > 1<<62 {
		return fmt.Errorf("%w: expire date out of range", ErrBadObject)
	}
	o.Expire = time.UnixMilli(int64(ms))
	o.Home = addrPortFrom18(b[9:27])
	o.Flags = b[27]
	copy(o.Writer[:], b[28:60])
	copy(o.Salt[:], b[60:76])
	n := binary.BigEndian.Uint32(b[76:80])
	if n > MaxPayload {
		return fmt.Errorf("%w: payload of %d bytes (max %d)", ErrTooLarge, n, MaxPayload)
	}
	if uint64(len(b)) != uint64(objectFixed)+uint64(n) {
		return fmt.Errorf("%w: object length %d does not match payload length %d", ErrBadObject, len(b), n)
	}
	o.Payload = append([]byte(nil), b[80:80+n]...)
	copy(o.Sig[:], b[80+n:])
	return nil
}

// Entry is one member of a cluster: a token and the signature of the
// cluster's writer over (cluster token, member token, box). In a sealed
// cluster (FlagSealedCluster) Token is an opaque member id (see
// NewSealedEntry) and Box holds the member token sealed with the group's
// keys.
type Entry struct {
	// Token is the member, or its opaque id in a sealed cluster.
	Token Token
	// Sig is the Ed25519 signature by the parent object's writer key.
	Sig [ed25519.SignatureSize]byte
	// Box is the sealed member token (sealed clusters only).
	Box []byte
}

// entrySize is the encoded size of an Entry of a clear cluster (token,
// signature, box length).
const entrySize = TokenSize + ed25519.SignatureSize + 1

// sealedIDVersion marks an opaque member id in byte 8.
const sealedIDVersion = 0x80 | tokenVersion

// boxSize is the size of a sealed member token.
const boxSize = TokenSize + 16

func entrySigMsg(parent Token, e Entry) []byte {
	b := append([]byte("liveobjects/mo cluster entry v1\x00"), parent[:]...)
	b = append(b, e.Token[:]...)
	return append(b, e.Box...)
}

// NewEntry signs member as an entry of parent's clear cluster.
func NewEntry(keys Keys, parent, member Token) Entry {
	e := Entry{Token: member}
	copy(e.Sig[:], ed25519.Sign(keys.Writer, entrySigMsg(parent, e)))
	return e
}

// NewSealedEntry seals member as an entry of parent's sealed cluster: the
// id keeps the member's copy-expire date (clusters stay in expire order)
// and replaces the rest by a keyed hash, the same at every copy so that
// clusters reconcile; the box holds the member token, sealed
// deterministically with AES-256-GCM under a key derived from the
// payload key.
func NewSealedEntry(keys Keys, parent, member Token) Entry {
	e := Entry{Token: keys.sealedID(member)}
	e.Box = keys.sealBox(parent, e.Token, member)
	copy(e.Sig[:], ed25519.Sign(keys.Writer, entrySigMsg(parent, e)))
	return e
}

// OpenEntry returns the member token of e: e.Token for a clear entry, the
// opened box for a sealed one.
func OpenEntry(keys Keys, parent Token, e Entry) (Token, error) {
	if e.Box == nil {
		return e.Token, nil
	}
	return keys.openBox(parent, e)
}

// VerifyEntry checks that e was signed by the writer of parent and has the
// form parent's cluster requires.
func VerifyEntry(parent *Object, pt Token, e Entry) error {
	if !ed25519.Verify(ed25519.PublicKey(parent.Writer[:]), entrySigMsg(pt, e), e.Sig[:]) {
		return fmt.Errorf("%w: %s in cluster of %s", ErrBadEntry, e.Token.Short(), pt.Short())
	}
	if parent.Flags&FlagSealedCluster != 0 {
		if e.Token[8] != sealedIDVersion || len(e.Box) != boxSize {
			return fmt.Errorf("%w: clear member in the sealed cluster of %s", ErrBadEntry, pt.Short())
		}
		return nil
	}
	if e.Box != nil {
		return fmt.Errorf("%w: sealed member in the clear cluster of %s", ErrBadEntry, pt.Short())
	}
	if err := e.Token.check(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadEntry, err)
	}
	return nil
}
