package qsm

import (
	"errors"
	"fmt"

	"github.com/liveobjects/liveobjects/transport"
)

// Sentinel errors of the package. Errors that cross the wire carry one of
// the numeric codes below, never text to be parsed.
var (
	// ErrBadMagic is returned when a frame or datagram does not start with
	// the QSM magic: it belongs to some other protocol.
	ErrBadMagic = errors.New("qsm: not a QSM packet (bad magic)")
	// ErrVersion is returned when the peer speaks a protocol version this
	// build does not.
	ErrVersion = errors.New("qsm: protocol version mismatch")
	// ErrChecksum is returned when a datagram's checksum does not match.
	ErrChecksum = errors.New("qsm: checksum mismatch")
	// ErrTruncated is returned when a frame or datagram ends early.
	ErrTruncated = errors.New("qsm: truncated packet")
	// ErrMalformed is returned when a frame or datagram has a field out of
	// range (a length over its cap, an unknown type, trailing bytes).
	ErrMalformed = errors.New("qsm: malformed packet")
	// ErrAuth is returned when a datagram or a coordinator-link handshake
	// fails authentication with the shared key (Config.Key): a tag is
	// missing, wrong, or present where no key is set.
	ErrAuth = errors.New("qsm: authentication failed")
	// ErrBadConfig is returned by ParseConfig and the constructors for a
	// setting that cannot be used.
	ErrBadConfig = errors.New("qsm: bad configuration")
	// ErrUnknownMember is returned when a client names a membership the
	// service does not know.
	ErrUnknownMember = errors.New("qsm: unknown member")
	// ErrInternal is returned for a failure inside the service.
	ErrInternal = errors.New("qsm: internal error")
)

// The ways a datagram fails authentication.
var (
	errNoKey           = fmt.Errorf("%w: datagram carries a tag but this node has no key (set key_file to the key the other nodes use)", ErrAuth)
	errUnauthenticated = fmt.Errorf("%w: datagram carries no tag but this node has a key (give every node the same key_file)", ErrAuth)
	errBadTag          = fmt.Errorf("%w: datagram tag does not match this node's key (forged, or another key)", ErrAuth)
)

// Wire error codes. ONLY APPEND TO THIS LIST: the values are part of the
// protocol.
const (
	codeOK            uint16 = 0
	codeMalformed     uint16 = 1
	codeTooLarge      uint16 = 2
	codeVersion       uint16 = 3
	codeClosed        uint16 = 4
	codeNoChannel     uint16 = 5
	codeInternal      uint16 = 6
	codeUnknownMember uint16 = 7
	codeDenied        uint16 = 8
)

// errorCode maps an error to its wire code.
func errorCode(err error) uint16 {
	switch {
	case err == nil:
		return codeOK
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrTruncated), errors.Is(err, ErrBadMagic):
		return codeMalformed
	case errors.Is(err, transport.ErrTooLarge):
		return codeTooLarge
	case errors.Is(err, ErrVersion):
		return codeVersion
	case errors.Is(err, transport.ErrClosed):
		return codeClosed
	case errors.Is(err, transport.ErrNoChannel):
		return codeNoChannel
	case errors.Is(err, ErrUnknownMember):
		return codeUnknownMember
	case errors.Is(err, transport.ErrDenied):
		return codeDenied
	}
	return codeInternal
}

// codeError turns a wire code and message back into an error that matches
// the right sentinel with errors.Is.
func codeError(code uint16, msg string) error {
	var base error
	switch code {
	case codeOK:
		return nil
	case codeMalformed:
		base = ErrMalformed
	case codeTooLarge:
		base = transport.ErrTooLarge
	case codeVersion:
		base = ErrVersion
	case codeClosed:
		base = transport.ErrClosed
	case codeNoChannel:
		base = transport.ErrNoChannel
	case codeUnknownMember:
		base = ErrUnknownMember
	case codeDenied:
		base = transport.ErrDenied
	default:
		base = ErrInternal
	}
	if msg == "" {
		return base
	}
	return fmt.Errorf("%w: %s", base, msg)
}
