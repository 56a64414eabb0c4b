package qsm

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash"
)

// Authentication with a shared key (Config.Key). Without a key a datagram
// is checked for integrity only (crc32c): a host on the LAN that speaks
// the protocol can forge one. With a key every datagram carries a tag,
// HMAC-SHA256 truncated to tagSize bytes, and the type byte has
// dgAuthFlag set:
//
//	0  header (type | dgAuthFlag)
//	32 body
//	n  tag     HMAC-SHA256(key, datagram up to the tag, crc32c field zero)[:16]
//
// The crc32c then covers the whole datagram, tag included, so that noise
// is told from forgery (ErrChecksum before ErrAuth). A service with a key
// drops datagrams without a valid tag; one without a key drops datagrams
// that have one, so that a node given the wrong configuration is noticed
// rather than half-heard.
//
// On the coordinator link the key authenticates both ends before the
// coordinator takes a node into the view (see gmsSession and
// Coordinator.hello): the hello carries a nonce of the service, the
// coordinator answers with its own nonce and a tag over both and the
// hello (gmsChallenge), and the service proves it holds the key with a
// tag over the same under another label (gmsProof). Fresh nonces on both
// sides make a recorded handshake useless.
const (
	// tagSize is the length of a datagram's authentication tag.
	tagSize = 16
	// dgAuthFlag marks an authenticated datagram in the type byte.
	dgAuthFlag uint8 = 0x80
	// nonceSize is the length of a handshake nonce.
	nonceSize = 16
	// MinKeySize is the shortest key Config.Key accepts.
	MinKeySize = 16
)

// Labels of the handshake tags, so that neither can stand for the other.
const (
	labelCoordinator = "qsm gms coordinator"
	labelService     = "qsm gms service"
)

// dgAuth computes datagram tags. It belongs to one goroutine.
type dgAuth struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// newDgAuth returns a tagger for key, or nil for no key.
func newDgAuth(key []byte) *dgAuth {
	if len(key) == 0 {
		return nil
	}
	return &dgAuth{mac: hmac.New(sha256.New, key)}
}

var zero4 [4]byte

// tag computes the tag of b (a datagram without its tag).
func (a *dgAuth) tag(b []byte) []byte {
	a.mac.Reset()
	a.mac.Write(b[:4])
	a.mac.Write(zero4[:])
	a.mac.Write(b[8:])
	return a.mac.Sum(a.sum[:0])[:tagSize]
}

// seal completes a datagram: with a key it sets dgAuthFlag and appends
// the tag (b grows by tagSize; the returned slice may be a new one), then
// writes the checksum. On a nil *dgAuth it is sealDatagram.
func (a *dgAuth) seal(b []byte) []byte {
	if a == nil {
		sealDatagram(b)
		return b
	}
	b[3] |= dgAuthFlag
	b = append(b, a.tag(b)...)
	sealDatagram(b)
	return b
}

// overhead is what authentication adds to a datagram.
func (a *dgAuth) overhead() int {
	if a == nil {
		return 0
	}
	return tagSize
}

// verify checks the tag of a datagram whose checksum was found good and
// returns the datagram without it.
func (a *dgAuth) verify(b []byte) ([]byte, error) {
	authed := b[3]&dgAuthFlag != 0
	switch {
	case a == nil && authed:
		return nil, errNoKey
	case a == nil:
		return b, nil
	case !authed:
		return nil, errUnauthenticated
	case len(b) < dgHeaderSize+tagSize:
		return nil, ErrTruncated
	}
	n := len(b) - tagSize
	if !hmac.Equal(a.tag(b[:n]), b[n:]) {
		return nil, errBadTag
	}
	return b[:n], nil
}

// newNonce returns a fresh random nonce.
func newNonce() []byte {
	n := make([]byte, nonceSize)
	rand.Read(n)
	return n
}

// handshakeTag is the tag over a coordinator-link handshake: label, the
// service's nonce, the coordinator's nonce and the hello body.
func handshakeTag(key []byte, label string, nonceS, nonceC, hello []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	for _, p := range [][]byte{nonceS, nonceC, hello} {
		m.Write(binary.BigEndian.AppendUint32(nil, uint32(len(p))))
		m.Write(p)
	}
	return m.Sum(nil)
}
