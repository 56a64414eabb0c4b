package relay

import (
	"errors"
	"fmt"

	"github.com/liveobjects/liveobjects/transport"
)

// Code is a stable numeric error code carried on the wire. ONLY APPEND TO
// THIS LIST: the values are part of the protocol.
type Code uint16

// Error codes.
const (
	// CodeProtocol: the peer sent something the protocol does not allow.
	CodeProtocol Code = 1
	// CodeVersion: no protocol version in common.
	CodeVersion Code = 2
	// CodeDenied: authorization failed (secret or channel token).
	CodeDenied Code = 3
	// CodeNoChannel: the channel does not exist and may not be created.
	CodeNoChannel Code = 4
	// CodeTooLarge: an event or frame exceeds the limit.
	CodeTooLarge Code = 5
	// CodeExists: the channel already exists.
	CodeExists Code = 6
	// CodeShutdown: the relay is shutting down.
	CodeShutdown Code = 7
	// CodeInternal: the relay failed (storage error, ...).
	CodeInternal Code = 8
	// CodeTrimmed: the history a joiner needs was trimmed and no member
	// could give a checkpoint.
	CodeTrimmed Code = 9
	// CodeNotJoined: publish or leave on a channel the connection has not joined.
	CodeNotJoined Code = 10
	// CodeAlreadyJoined: the connection already has a member in the channel.
	CodeAlreadyJoined Code = 11
	// CodeRemoved: the channel was removed while joined.
	CodeRemoved Code = 12
	// CodeBadRequest: a request carried an invalid argument (bad name, ...).
	CodeBadRequest Code = 13
)

var codeNames = map[Code]string{
	CodeProtocol: "protocol error", CodeVersion: "version mismatch",
	CodeDenied: "not authorized", CodeNoChannel: "no such channel",
	CodeTooLarge: "too large", CodeExists: "channel exists",
	CodeShutdown: "relay shutting down", CodeInternal: "internal relay error",
	CodeTrimmed: "history trimmed", CodeNotJoined: "not joined",
	CodeAlreadyJoined: "already joined", CodeRemoved: "channel removed",
	CodeBadRequest: "bad request",
}

// String names the code.
func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code %d", uint16(c))
}

// Error is an error that crossed (or will cross) the wire: a stable code
// and a message for people. Callers test the code, never the message; the
// transport sentinels match with errors.Is.
type Error struct {
	Code Code
	Msg  string
}

// Error formats the error as "relay: CODE-NAME (N): message".
func (e *Error) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("relay: %s (%d)", e.Code, uint16(e.Code))
	}
	return fmt.Sprintf("relay: %s (%d): %s", e.Code, uint16(e.Code), e.Msg)
}

// Is maps codes onto the transport sentinels and onto sentinels of this
// package.
func (e *Error) Is(target error) bool {
	switch target {
	case transport.ErrDenied:
		return e.Code == CodeDenied
	case transport.ErrNoChannel:
		return e.Code == CodeNoChannel || e.Code == CodeRemoved
	case transport.ErrTooLarge:
		return e.Code == CodeTooLarge
	case transport.ErrClosed:
		return e.Code == CodeShutdown
	case ErrProtocol:
		return e.Code == CodeProtocol || e.Code == CodeVersion
	case ErrTrimmed:
		return e.Code == CodeTrimmed
	case ErrExists:
		return e.Code == CodeExists
	}
	return false
}

// Sentinel errors of this package.
var (
	// ErrProtocol matches protocol violations and version mismatches.
	ErrProtocol = errors.New("relay: protocol error")
	// ErrTrimmed matches joins that need history the relay no longer has.
	ErrTrimmed = errors.New("relay: history trimmed")
	// ErrExists matches creating a channel that exists.
	ErrExists = errors.New("relay: channel exists")
	// ErrDisconnected is returned by calls that need the connection when
	// it is down and the context ended before it came back.
	ErrDisconnected = errors.New("relay: disconnected")
	// ErrSilent is why a client drops a connection on which the relay
	// answered nothing, not even a ping, for three heartbeats.
	ErrSilent = errors.New("relay: relay silent")
	// ErrStore matches failures of the relay's durable store (corrupt
	// file, wrong format version).
	ErrStore = errors.New("relay: store")
	// ErrConfig matches a ServerConfig that NewServer refuses (a limit
	// the protocol cannot carry, ...).
	ErrConfig = errors.New("relay: invalid server configuration")
)

// codeOf maps an error to a wire code.
func codeOf(err error) Code {
	var re *Error
	switch {
	case errors.As(err, &re):
		return re.Code
	case errors.Is(err, transport.ErrDenied):
		return CodeDenied
	case errors.Is(err, transport.ErrNoChannel):
		return CodeNoChannel
	case errors.Is(err, transport.ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, ErrExists):
		return CodeExists
	case errors.Is(err, transport.ErrClosed):
		return CodeShutdown
	}
	return CodeInternal
}

func errf(code Code, format string, a ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, a...)}
}
