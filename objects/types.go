package objects

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/liveobjects/liveobjects/transport"
)

// Type is an object's distributed type: a tuple of aspects. Interface is
// what the object offers its users (the id of its ObjectClass when it
// declares one, else the interface of its class), Category selects the
// object logic, Requires the reliability the channel must give, Security
// the protection it needs ("none", "authenticated" or "encrypted").
type Type struct {
	Interface string
	Category  Category
	Requires  transport.Guarantee
	Security  string
}

// Security levels, weakest first.
const (
	SecurityNone          = "none"
	SecurityAuthenticated = "authenticated"
	SecurityEncrypted     = "encrypted"
)

// Parameters an object may use to strengthen its type.
const (
	// ReliabilityParam (xsd:string, guarantees joined by "+") adds to the
	// guarantees the class requires, e.g. "virtual-synchrony".
	ReliabilityParam = "reliability"
	// SecurityParam (xsd:string) sets the security aspect.
	SecurityParam = "security"
)

// ErrMismatch is matched (errors.Is) by the error CheckDriver returns when
// a channel's driver does not give what an object's type requires.
var ErrMismatch = errors.New("objects: driver does not provide what the object requires")

// ErrUnknownClass is matched by errors about objects whose class this
// project does not implement.
var ErrUnknownClass = errors.New("objects: class not implemented")

// MismatchError says which object needs what, and what the channel's
// driver gives instead.
type MismatchError struct {
	Object, Channel, Driver string
	Requires, Provides      transport.Guarantee
	Missing                 transport.Guarantee
}

// Error reads "object: needs X; channel \"c\" over driver provides Y".
func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s: needs %s; channel %q over %s provides %s",
		e.Object, Strongest(e.Missing), e.Channel, e.Driver, Strongest(e.Provides))
}

// Is makes errors.Is(err, ErrMismatch) true.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// Strongest names a guarantee set by its strongest members only, leaving
// out what they imply: reliable+fifo is "fifo", reliable+fifo+total-order+
// state-transfer is "total-order+state-transfer".
func Strongest(g transport.Guarantee) string {
	var keep transport.Guarantee
	for bit := transport.Guarantee(1); bit != 0 && bit <= g; bit <<= 1 {
		if g&bit == 0 {
			continue
		}
		others := g &^ bit
		if others.Closure()&bit == 0 {
			keep |= bit
		}
	}
	return keep.String()
}

// CheckDriver checks that a driver providing provides can carry an object
// of type t. It returns nil, or a *MismatchError that reads, e.g.
//
//	chat: needs total-order; channel "news" over qsm provides fifo
func (t Type) CheckDriver(object, channel, driver string, provides transport.Guarantee) error {
	if provides.Satisfies(t.Requires) {
		return nil
	}
	return &MismatchError{Object: object, Channel: channel, Driver: driver,
		Requires: t.Requires, Provides: provides, Missing: provides.Missing(t.Requires)}
}

// SecurityLevel orders security aspects: 0 none, 1 authenticated, 2
// encrypted; -1 for a name it does not know.
func SecurityLevel(s string) int {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", SecurityNone:
		return 0
	case SecurityAuthenticated:
		return 1
	case SecurityEncrypted:
		return 2
	}
	return -1
}

// Weaker reports whether t is weaker than (or equal to) u in the partial
// order of types: an object that requires t can use anything of type u.
// It holds when the interfaces and categories agree (an empty Interface
// or an unknown Category in t matches anything), every guarantee t
// requires is implied by u's, and t's security is no stronger than u's.
func (t Type) Weaker(u Type) bool {
	if t.Interface != "" && t.Interface != u.Interface {
		return false
	}
	if t.Category != "" && t.Category != CategoryUnknown && t.Category != u.Category {
		return false
	}
	if !u.Requires.Satisfies(t.Requires) {
		return false
	}
	ts, us := SecurityLevel(t.Security), SecurityLevel(u.Security)
	if ts < 0 || us < 0 {
		return strings.EqualFold(t.Security, u.Security)
	}
	return ts <= us
}

// String prints the type as "category interface requires security".
func (t Type) String() string {
	sec := t.Security
	if sec == "" {
		sec = SecurityNone
	}
	return fmt.Sprintf("%s (interface %s; requires %s; security %s)", t.Category, t.Interface, Strongest(t.Requires.Closure()), sec)
}

// interfaces of the implemented categories, used when an object declares
// no ObjectClass.
var interfaces = map[Category]string{
	CategoryStream:   "lines",
	CategoryText:     "text",
	CategoryVariable: "value",
	CategoryFolder:   "folder",
	CategoryService:  "service",
	CategoryChannel:  "folder",
}

// History returns a stream object's "history" parameter (0 when absent).
func History(o *Object) (int, error) {
	p, ok := o.Param(HistoryParam)
	if !ok || p.Value == nil {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(p.Value.Text))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("parameter %q: %q is not a non-negative integer", HistoryParam, p.Value.Text)
	}
	return n, nil
}

// TypeOf returns the class and distributed type of a definition. For an
// object of a class this project does not implement it returns the
// unknown class, a type of category unknown, and an error that names the
// class and matches ErrUnknownClass.
func TypeOf(o *Object) (Class, Type, error) {
	if o == nil || o.Nil {
		return Class{Category: CategoryUnknown}, Type{Category: CategoryUnknown, Security: SecurityNone}, errors.New("null object: it is switched off")
	}
	c, known := ClassOf(o)
	t := Type{Category: c.Category, Requires: c.Requires, Interface: interfaces[c.Category], Security: SecurityNone}
	if o.Class != nil && o.Class.ID != "" {
		t.Interface = o.Class.ID
	}
	if !known {
		return c, t, &UnknownClassError{ID: c.ID, Name: o.Name()}
	}
	if c.Category == CategoryStream {
		h, err := History(o)
		if err != nil {
			return c, t, err
		}
		if h > 0 {
			t.Requires |= transport.StateTransfer
		}
	}
	if p, ok := o.Param(ReliabilityParam); ok && p.Value != nil {
		g, err := transport.ParseGuarantees(p.Value.Text)
		if err != nil {
			return c, t, fmt.Errorf("parameter %q: %w", ReliabilityParam, err)
		}
		t.Requires |= g
	}
	if p, ok := o.Param(SecurityParam); ok && p.Value != nil {
		s := strings.ToLower(strings.TrimSpace(p.Value.Text))
		if SecurityLevel(s) < 0 {
			return c, t, fmt.Errorf("parameter %q: unknown security %q (want none, authenticated or encrypted)", SecurityParam, p.Value.Text)
		}
		if s == "" {
			s = SecurityNone
		}
		t.Security = s
	}
	return c, t, nil
}

// UnknownClassError says that an object's class is not implemented. It
// matches ErrUnknownClass.
type UnknownClassError struct {
	// ID is the class id; Name the object's display name, if any.
	ID, Name string
}

// Error names the class (and the object).
func (e *UnknownClassError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("class %s (of %q) is not implemented by liveobjects", e.ID, e.Name)
	}
	return fmt.Sprintf("class %s is not implemented by liveobjects", e.ID)
}

// Is makes errors.Is(err, ErrUnknownClass) true.
func (e *UnknownClassError) Is(target error) bool { return target == ErrUnknownClass }

// DriverProvides returns what the drivers this project has give, for
// messages and checks made before a driver is running: relay gives
// total-order+state-transfer, qsm gives fifo (reliable).
func DriverProvides(driver string) (transport.Guarantee, bool) {
	switch driver {
	case "relay":
		return transport.Reliable | transport.FIFO | transport.TotalOrder | transport.StateTransfer, true
	case "qsm":
		return transport.Reliable | transport.FIFO, true
	}
	return 0, false
}
