package micro

import (
	"errors"
	"fmt"
	"net/netip"
)

// Sentinel errors of the micro object system. Errors that cross the wire
// carry a Code; see codeOf and errorOf.
var (
	// ErrBadToken: a token's text or bytes are malformed.
	ErrBadToken = errors.New("micro: malformed token")
	// ErrBadObject: an object is malformed, does not match its token, or
	// carries a bad signature. Such objects are rejected and counted.
	ErrBadObject = errors.New("micro: bogus object")
	// ErrBadEntry: a cluster entry's signature does not verify against the
	// cluster's writer key.
	ErrBadEntry = errors.New("micro: bogus cluster entry")
	// ErrNotFound: no reachable server holds the object.
	ErrNotFound = errors.New("micro: object not found")
	// ErrBusy: the server is swamped; try the servers on its ditto-list.
	ErrBusy = errors.New("micro: server busy")
	// ErrNotAccepted: the peer has no matching replication policy and does
	// not take the items.
	ErrNotAccepted = errors.New("micro: no matching replication policy")
	// ErrTooLarge: a frame, payload or list exceeds its limit.
	ErrTooLarge = errors.New("micro: too large")
	// ErrProtocol: a peer broke the wire protocol.
	ErrProtocol = errors.New("micro: protocol error")
	// ErrVersionMismatch: no common protocol or record version.
	ErrVersionMismatch = errors.New("micro: version mismatch")
	// ErrChecksum: a stored record failed its checksum.
	ErrChecksum = errors.New("micro: checksum mismatch")
	// ErrInvalid: a stored record has a bad magic number or layout.
	ErrInvalid = errors.New("micro: invalid record")
	// ErrBadKeys: the keys do not open the payload (wrong keys or bogus
	// object), or a key file is malformed.
	ErrBadKeys = errors.New("micro: keys do not fit")
	// ErrClosed: the server or library has been closed.
	ErrClosed = errors.New("micro: closed")
	// ErrBadPolicy: a replication policy text cannot be parsed.
	ErrBadPolicy = errors.New("micro: bad replication policy")
	// ErrExpired: the copy-expire date is in the past.
	ErrExpired = errors.New("micro: copy-expire date has passed")
	// ErrInternal: the remote side failed for a reason of its own.
	ErrInternal = errors.New("micro: remote internal error")
)

// Code is a stable numeric error code carried on the wire.
//
// ONLY APPEND TO THIS LIST: the values are part of the protocol.
type Code uint16

// Wire error codes.
const (
	CodeOK Code = iota
	CodeBadRequest
	CodeNotFound
	CodeBusy
	CodeNotAccepted
	CodeTooLarge
	CodeInternal
	CodeVersionMismatch
	CodeBadObject
	CodeBadEntry
	CodeBadToken
	CodeExpired
	CodeBadPolicy
	CodeBadKeys
)

var codeErrs = []struct {
	c   Code
	err error
}{
	{CodeBadRequest, ErrProtocol},
	{CodeNotFound, ErrNotFound},
	{CodeBusy, ErrBusy},
	{CodeNotAccepted, ErrNotAccepted},
	{CodeTooLarge, ErrTooLarge},
	{CodeVersionMismatch, ErrVersionMismatch},
	{CodeBadObject, ErrBadObject},
	{CodeBadEntry, ErrBadEntry},
	{CodeBadToken, ErrBadToken},
	{CodeExpired, ErrExpired},
	{CodeBadPolicy, ErrBadPolicy},
	{CodeBadKeys, ErrBadKeys},
}

// codeOf maps an error to its wire code.
func codeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	for _, ce := range codeErrs {
		if errors.Is(err, ce.err) {
			return ce.c
		}
	}
	return CodeInternal
}

// RemoteError is an error reported by the other side of a connection.
type RemoteError struct {
	// Code is the stable wire code.
	Code Code
	// Msg is the remote side's text, for people only.
	Msg string
	// Ditto lists servers likely to answer instead (BUSY, NOT-FOUND).
	Ditto []netip.AddrPort
}

// Error implements error.
func (e *RemoteError) Error() string { return fmt.Sprintf("remote error %d: %s", e.Code, e.Msg) }

// Unwrap maps the code back to the package sentinel.
func (e *RemoteError) Unwrap() error {
	for _, ce := range codeErrs {
		if ce.c == e.Code {
			return ce.err
		}
	}
	return ErrInternal
}
