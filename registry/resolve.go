package registry

import (
	"errors"
	"fmt"
	"strings"

	"github.com/liveobjects/liveobjects/objects"
)

// ResolveError is a problem resolving a From chain or binding an object,
// with the file and line at fault; it prints "file:line: msg". Err is the
// cause (ErrDangling, ErrCycle, ErrNoChannel, ErrNotClient,
// ErrSwitchedOff, or an error matching objects.ErrUnknownClass), for
// errors.Is.
type ResolveError struct {
	File string
	Line int
	Msg  string
	Err  error // the sentinel
}

// Error prints "file:line: msg".
func (e *ResolveError) Error() string {
	return Problem{File: e.File, Line: e.Line, Msg: e.Msg}.String()
}

// Unwrap returns the sentinel.
func (e *ResolveError) Unwrap() error { return e.Err }

// dict is what a From denotes: the registry itself, a registry entry, or
// an element (by path) of a registry entry's object.
type dict struct {
	registry bool
	key      string
	entry    *entry
	element  string
}

func (d dict) String() string {
	switch {
	case d.registry:
		return "the registry"
	case d.element != "":
		return fmt.Sprintf("element %q of %s", d.element, d.entry.Path)
	}
	return d.entry.Path
}

// resolver walks From chains; the Root's mu is held (read) by the caller.
type resolver struct {
	r        *Root
	chain    []string
	visiting []string // registry keys being resolved, for cycle detection
}

func (rs *resolver) add(format string, a ...any) {
	rs.chain = append(rs.chain, fmt.Sprintf(format, a...))
}

// from resolves the dictionary a From object names. file is the file the
// From is written in.
func (rs *resolver) from(f *objects.Object, file string) (dict, error) {
	if f.Nil {
		return dict{}, &ResolveError{File: file, Line: f.Line, Msg: "From is a null object", Err: ErrNotFound}
	}
	if f.From == nil {
		if objects.BaseID(f.ID) == objects.RegistryID {
			rs.add("the registry")
			return dict{registry: true}, nil
		}
		return rs.key(f.ID, file, f.Line)
	}
	d, err := rs.from(f.From, file)
	if err != nil {
		return d, err
	}
	return rs.lookup(d, f.ID, file, f.Line)
}

// refTarget resolves a reference object (an id taken from the dictionary
// its From names). It returns the dictionary; when that is the registry,
// the id is resolved as a key (so a dangling key is found) and the key's
// target returned.
func (rs *resolver) refTarget(o *objects.Object, file string) (dict, error) {
	d, err := rs.from(o.From, file)
	if err != nil || !d.registry {
		return d, err
	}
	return rs.key(o.ID, file, o.Line)
}

// lookup finds id in the dictionary d.
func (rs *resolver) lookup(d dict, id, file string, line int) (dict, error) {
	if d.registry {
		return rs.key(id, file, line)
	}
	el := id
	if d.element != "" {
		el = d.element + "/" + id
	}
	rs.add("element %q of %s", el, d.entry.Path)
	return dict{key: d.key, entry: d.entry, element: el}, nil
}

// key resolves a registry key, following aliases (registry entries that
// are themselves reference objects with a From).
func (rs *resolver) key(k, file string, line int) (dict, error) {
	k0 := objects.BaseID(strings.TrimSpace(k))
	for i, v := range rs.visiting {
		if strings.EqualFold(v, k0) {
			loop := append(append([]string{}, rs.visiting[i:]...), k0)
			return dict{}, &ResolveError{File: file, Line: line, Err: ErrCycle,
				Msg: "cycle in From chain: " + strings.Join(loop, " -> ")}
		}
	}
	e := rs.r.keyLocked(k0)
	if e == nil {
		return dict{}, &ResolveError{File: file, Line: line, Err: ErrDangling,
			Msg: fmt.Sprintf("From names registry key %s, but %s/%s/ holds no %s file", k0, RegistryDir, k0, Ext)}
	}
	if e.Def == nil {
		return dict{}, &ResolveError{File: file, Line: line, Err: ErrDangling,
			Msg: fmt.Sprintf("registry key %s: %s does not parse: %v", k0, e.Path, e.Err)}
	}
	// Steps are recorded innermost first; Resolve prints them reversed.
	if !e.Def.Nil && e.Def.From != nil {
		rs.visiting = append(rs.visiting, k0)
		defer func() { rs.visiting = rs.visiting[:len(rs.visiting)-1] }()
		d, err := rs.from(e.Def.From, e.Path)
		if err == nil {
			d, err = rs.lookup(d, e.Def.ID, e.Path, e.Def.Line)
		}
		rs.add("key %s: %s: %s", k0, e.Path, describe(e.Def))
		return d, err
	}
	rs.add("key %s: %s: %s", k0, e.Path, describe(e.Def))
	return dict{key: k0, entry: e}, nil
}

// describe says in a few words what a definition is.
func describe(o *objects.Object) string {
	if o == nil {
		return "no definition"
	}
	if o.Nil {
		return "null object (switched off)"
	}
	var b strings.Builder
	if o.From != nil {
		fmt.Fprintf(&b, "%s taken from a dictionary", o.ID)
	} else if c, ok := objects.LookupClass(o.ID); ok {
		b.WriteString(c.Name)
	} else {
		fmt.Fprintf(&b, "unknown class %s", o.ID)
	}
	if n := o.Name(); n != "" {
		fmt.Fprintf(&b, " %q", n)
	}
	if p, ok := o.Param("address"); ok && p.Value != nil && p.Value.Text != "" {
		fmt.Fprintf(&b, " (address %s)", p.Value.Text)
	}
	return b.String()
}

// reference is one object with a From inside a definition.
type reference struct {
	label string
	obj   *objects.Object
}

// refs lists the objects with a From in o, in document order: o itself,
// parameter values, components, the authority, class parameters.
func refs(o *objects.Object, label string, out []reference) []reference {
	if o == nil {
		return out
	}
	if o.From != nil {
		out = append(out, reference{label, o})
	}
	for _, p := range o.Parameters {
		out = paramRefs(p, label, out)
	}
	if o.Class != nil {
		for _, p := range o.Class.Parameters {
			out = paramRefs(p, label+"ObjectClass ", out)
		}
	}
	if o.Authority != nil {
		out = refs(o.Authority, label+"authority ", out)
	}
	for _, c := range o.Components {
		out = refs(c.Object, fmt.Sprintf("%scomponent %q ", label, c.ID), out)
	}
	return out
}

func paramRefs(p objects.Parameter, label string, out []reference) []reference {
	if p.Value == nil {
		return out
	}
	l := fmt.Sprintf("%sparameter %q ", label, p.ID)
	if p.Value.Object != nil {
		return refs(p.Value.Object, l, out)
	}
	if p.Value.Class != nil {
		for _, q := range p.Value.Class.Parameters {
			out = paramRefs(q, l, out)
		}
	}
	return out
}

// Resolve resolves every From chain in the definition at rel and returns
// the chain, human readable (one step a line), for show. It fails with a
// *ResolveError (matching ErrDangling or ErrCycle) when a key is missing
// or a chain loops, or with ErrNotFound when there is no such file.
func (r *Root) Resolve(rel string) ([]string, error) {
	rel = r.Clean(rel)
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.entries[rel]
	if !ok {
		return nil, fmt.Errorf("registry: resolve %s: %w", rel, ErrNotFound)
	}
	chain := []string{fmt.Sprintf("%s: %s", rel, describe(e.Def))}
	if e.Def == nil {
		return chain, e.Err
	}
	var first error
	for _, rf := range refs(e.Def, "", nil) {
		rs := &resolver{r: r}
		d, err := rs.refTarget(rf.obj, rel)
		head := strings.TrimSpace(rf.label)
		if head == "" {
			head = "itself"
		}
		drv, isDriver := "", false
		if err == nil {
			drv, isDriver = driverOf(d)
		}
		step := fmt.Sprintf("%s: %s", head, rf.obj.ID)
		if isDriver && rf.obj != e.Def {
			if c := r.channelLocked(rf.obj.ID); c != nil {
				step = fmt.Sprintf("%s: channel %s %q (%s/%s/%s)", head, c.md.ID, c.md.DisplayName(), ChannelsDir, c.dir, MetadataFile)
			} else {
				step = fmt.Sprintf("%s: channel %s (no %s/%s/%s)", head, rf.obj.ID, ChannelsDir, rf.obj.ID, MetadataFile)
			}
		}
		chain = append(chain, step)
		for i := len(rs.chain) - 1; i >= 0; i-- {
			chain = append(chain, "  from "+rs.chain[i])
		}
		if err != nil {
			chain = append(chain, "  error: "+err.Error())
			if first == nil {
				first = err
			}
			continue
		}
		if isDriver {
			chain = append(chain, "  driver: "+drv)
		}
	}
	return chain, first
}

// driverOf says which communication driver a dictionary is, if any: the
// relay client folder (by key or class) is "relay", the QSM client's "Qsm"
// element (by key or class) is "qsm".
func driverOf(d dict) (string, bool) {
	if d.registry || d.entry == nil || d.entry.Def == nil {
		return "", false
	}
	cls := objects.BaseID(d.entry.Def.ID)
	switch {
	case d.element == "" && (d.key == objects.KeyRelayClient || cls == objects.ClassRelayClient):
		return "relay", true
	case (d.element == objects.QSMFolderElement || d.element == "") && (d.key == objects.KeyQSMClient || cls == objects.ClassQuickSilver && d.element == objects.QSMFolderElement):
		return "qsm", true
	}
	return "", false
}

// resolveProblems resolves every reference in every definition and
// returns the problems (r.mu held).
func (r *Root) resolveProblemsLocked() []Problem {
	var out []Problem
	for _, e := range r.entries {
		if e.Def == nil || e.Def.Nil {
			continue
		}
		for _, rf := range refs(e.Def, "", nil) {
			rs := &resolver{r: r}
			d, err := rs.refTarget(rf.obj, e.Path)
			var re *ResolveError
			if errors.As(err, &re) {
				out = append(out, Problem{File: re.File, Line: re.Line, Msg: re.Msg})
				continue
			}
			if err != nil {
				out = append(out, Problem{File: e.Path, Line: rf.obj.Line, Msg: err.Error()})
				continue
			}
			if _, isDriver := driverOf(d); isDriver && rf.obj != e.Def && objects.IsChannelID(rf.obj.ID) {
				if r.channelLocked(rf.obj.ID) == nil {
					out = append(out, Problem{File: e.Path, Line: rf.obj.Line,
						Msg: fmt.Sprintf("channel %s has no %s/%s/%s", rf.obj.ID, ChannelsDir, rf.obj.ID, MetadataFile)})
				}
			}
		}
	}
	return out
}
