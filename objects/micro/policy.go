package micro

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// PolicyKind names a replication policy.
//
// ONLY APPEND: the values are stored and sent over the local channel.
type PolicyKind uint8

// Replication policies.
const (
	// Flooding forwards additions to the cluster to every server known to
	// share the object, and, with a level above 0, the referenced objects:
	// level 2d-1 pushes the objects at depth d of the graph, level 2d
	// reconciles their clusters (0: the cluster only; 1: also the members
	// themselves; 2: also the members' clusters; 3: also the objects
	// those clusters hold; ...). A server accepts flooded items only for
	// an object it floods itself, within its own level.
	Flooding PolicyKind = 1
	// Sustain keeps the local copy past its copy-expire date, for a
	// limited time that the application renews.
	Sustain PolicyKind = 2
)

// MaxFloodLevel bounds flooding levels.
const MaxFloodLevel = 16

// Policy is one REPLICATE request: start or stop a policy on an object.
type Policy struct {
	// Kind is the policy.
	Kind PolicyKind
	// Level is the flooding level (Flooding only).
	Level int
	// For is how long to sustain, from now (Sustain only).
	For time.Duration
	// Stop stops the policy instead of starting it.
	Stop bool
}

// String returns the text form accepted by ParsePolicy.
func (p Policy) String() string {
	switch {
	case p.Kind == Flooding && p.Stop:
		return "flooding:off"
	case p.Kind == Flooding:
		return "flooding:" + strconv.Itoa(p.Level)
	case p.Kind == Sustain && p.Stop:
		return "sustain:off"
	case p.Kind == Sustain:
		return "sustain:" + p.For.String()
	}
	return fmt.Sprintf("policy(%d)", p.Kind)
}

// ParsePolicy parses "flooding", "flooding:LEVEL", "flooding:off",
// "sustain:DURATION" (e.g. sustain:720h) and "sustain:off".
func ParsePolicy(s string) (Policy, error) {
	name, arg, _ := strings.Cut(strings.TrimSpace(strings.ToLower(s)), ":")
	switch name {
	case "flooding":
		if arg == "off" {
			return Policy{Kind: Flooding, Stop: true}, nil
		}
		if arg == "" {
			return Policy{Kind: Flooding}, nil
		}
		n, err := strconv.Atoi(arg)
		if err != nil || n < 0 || n > MaxFloodLevel {
			return Policy{}, fmt.Errorf("%w: flooding level %q: want 0..%d or off", ErrBadPolicy, arg, MaxFloodLevel)
		}
		return Policy{Kind: Flooding, Level: n}, nil
	case "sustain":
		if arg == "off" {
			return Policy{Kind: Sustain, Stop: true}, nil
		}
		d, err := time.ParseDuration(arg)
		if err != nil || d <= 0 {
			return Policy{}, fmt.Errorf("%w: sustain duration %q: want e.g. sustain:720h or sustain:off", ErrBadPolicy, arg)
		}
		return Policy{Kind: Sustain, For: d}, nil
	}
	return Policy{}, fmt.Errorf("%w: %q: want flooding[:LEVEL|:off] or sustain:DURATION|off", ErrBadPolicy, s)
}
