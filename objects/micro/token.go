package micro

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// TokenSize is the length of a token in bytes.
const TokenSize = 59

// tokenVersion is the layout version stored in byte 8 of every token.
const tokenVersion = 1

// Token names one micro object system-wide. Its layout is
//
//	[0:8]   copy-expire date, Unix milliseconds, big-endian
//	[8]     layout version (1)
//	[9:25]  home server IP address (16 bytes, IPv4 mapped into IPv6)
//	[25:27] home server port, big-endian
//	[27:59] SHA-256 over the object's fields and sealed payload
//
// Because the expire date comes first, the byte order of tokens is the
// order by copy-expire date, which is the order of every cluster.
// Anyone can compute a token from an object (Object.Token) and check a
// fetched object against the token it was asked for (Object.Verify).
type Token [TokenSize]byte

// Expire returns the copy-expire date encoded in t.
func (t Token) Expire() time.Time {
	return time.UnixMilli(int64(binary.BigEndian.Uint64(t[0:8])))
}

// Home returns the contact address of the object's home server.
func (t Token) Home() netip.AddrPort {
	return addrPortFrom18(t[9:27])
}

// Hash returns the SHA-256 part of t.
func (t Token) Hash() [32]byte {
	var h [32]byte
	copy(h[:], t[27:])
	return h
}

// IsZero reports whether t is the zero token.
func (t Token) IsZero() bool { return t == Token{} }

// Compare orders tokens by copy-expire date, then by the remaining bytes.
func (t Token) Compare(u Token) int { return bytes.Compare(t[:], u[:]) }

// String returns the text form: 79 characters of unpadded base64url.
func (t Token) String() string { return base64.RawURLEncoding.EncodeToString(t[:]) }

// Short returns a short prefix of the hash, for logs.
func (t Token) Short() string { return fmt.Sprintf("%x", t[27:33]) }

// MarshalText implements encoding.TextMarshaler.
func (t Token) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler. It checks the
// encoding and length but not the layout, so that it also carries the
// opaque member ids of sealed clusters; use ParseToken for user input.
func (t *Token) UnmarshalText(b []byte) error {
	var u Token
	if err := decodeToken(&u, b); err != nil {
		return err
	}
	*t = u
	return nil
}

// tokenEncoding decodes tokens strictly: the unused low bits of the last
// character must be zero, so that a token has one text form only.
var tokenEncoding = base64.RawURLEncoding.Strict()

// tokenTextLen is the length of a token's text form.
var tokenTextLen = base64.RawURLEncoding.EncodedLen(TokenSize)

// tokenShaped reports whether s has the length and alphabet of a token's
// text form, whether or not it is one.
func tokenShaped(s string) bool {
	if len(s) != tokenTextLen {
		return false
	}
	for _, c := range []byte(s) {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// decodeToken decodes the text form of a token into t. It takes exactly
// the form String writes: the base64 decoder by itself would also skip
// line breaks anywhere in the text and ignore the last character's unused
// bits, so that many strings would name one token.
func decodeToken(t *Token, b []byte) error {
	if len(b) != tokenTextLen {
		return fmt.Errorf("%w: %d characters, want %d", ErrBadToken, len(b), tokenTextLen)
	}
	n, err := tokenEncoding.Decode(t[:], b)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if n != TokenSize {
		return fmt.Errorf("%w: a line break inside the text (a token is %d characters of base64url)", ErrBadToken, tokenTextLen)
	}
	return nil
}

// ParseToken parses the text form of a token.
func ParseToken(s string) (Token, error) {
	var t Token
	if err := decodeToken(&t, []byte(s)); err != nil {
		return Token{}, err
	}
	if err := t.check(); err != nil {
		return Token{}, err
	}
	return t, nil
}

// TokenFromBytes checks and converts a binary token.
func TokenFromBytes(b []byte) (Token, error) {
	var t Token
	if len(b) != TokenSize {
		return t, fmt.Errorf("%w: %d bytes, want %d", ErrBadToken, len(b), TokenSize)
	}
	copy(t[:], b)
	return t, t.check()
}

func (t Token) check() error {
	if t[8] != tokenVersion {
		return fmt.Errorf("%w: layout version %d, want %d", ErrBadToken, t[8], tokenVersion)
	}
	if !t.Home().IsValid() || t.Home().Port() == 0 {
		return fmt.Errorf("%w: no home address", ErrBadToken)
	}
	return nil
}

// addrPortTo18 writes ap as 16 address bytes and 2 port bytes.
func addrPortTo18(dst []byte, ap netip.AddrPort) {
	a16 := ap.Addr().As16()
	copy(dst[0:16], a16[:])
	binary.BigEndian.PutUint16(dst[16:18], ap.Port())
}

func addrPortFrom18(b []byte) netip.AddrPort {
	if len(b) < 18 {
		return netip.AddrPort{}
	}
	var a16 [16]byte
	copy(a16[:], b[0:16])
	if a16 == ([16]byte{}) {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(netip.AddrFrom16(a16).Unmap(), binary.BigEndian.Uint16(b[16:18]))
}

// tokenFor computes the token of an object from its fields.
func tokenFor(o *Object) Token {
	var t Token
	pre := headerPrefix(o)
	copy(t[:], pre[:])
	h := sha256.New()
	h.Write([]byte("liveobjects/mo token v1\x00"))
	h.Write(t[0:27])
	h.Write([]byte{o.Flags})
	h.Write(o.Writer[:])
	h.Write(o.Salt[:])
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(o.Payload)))
	h.Write(n[:])
	h.Write(o.Payload)
	copy(t[27:], h.Sum(nil))
	return t
}

// headerPrefix returns the first 27 bytes of the object's token: expire
// date, layout version and home address.
func headerPrefix(o *Object) [27]byte {
	var p [27]byte
	binary.BigEndian.PutUint64(p[0:8], uint64(o.Expire.UnixMilli()))
	p[8] = tokenVersion
	addrPortTo18(p[9:27], o.Home)
	return p
}
