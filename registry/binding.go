package registry

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/liveobjects/liveobjects/objects"
)

// ChannelParam is the Parameter of an object that names its channel.
const ChannelParam = "channel"

// Binding is what joining an object means: its class and type, the
// channel it runs over and the driver that carries the channel.
type Binding struct {
	// Path is the object's file, relative to the root.
	Path string
	// Class and Type are the object's class and distributed type.
	Class objects.Class
	Type  objects.Type
	// ChannelID is the channel the object runs over; ChannelName is the
	// channel's metadata Name, or the ID when it has none (or no metadata).
	ChannelID, ChannelName string
	// Driver is "relay" or "qsm".
	Driver string
	// DriverParams are the settings of the driver's registry object:
	// its scalar parameters (e.g. "address" -> "127.0.0.1:60000"), nested
	// ones as "param.sub", and the name/value pairs of Configuration
	// values by name (e.g. "uplink_address"; the first wins).
	DriverParams map[string]string
	// History is a stream's bounded history (0: none).
	History int
	// Chain is the resolution chain, human readable, for show.
	Chain []string
}

// Binding returns what joining the object at rel means. Objects whose
// category has no channel (folders, services) get a Binding without a
// channel and no error. Errors name the file and line at fault; an object
// of a class this project does not implement gets an error that names the
// class (matching objects.ErrUnknownClass), with Path, Class and Chain
// filled in.
func (r *Root) Binding(rel string) (Binding, error) {
	rel = r.Clean(rel)
	chain, rerr := r.Resolve(rel)
	if errors.Is(rerr, ErrNotFound) && chain == nil {
		return Binding{Path: rel}, rerr
	}
	r.mu.RLock()
	b, err := r.bindingLocked(rel)
	// For a repository object, show how its target resolves too.
	var target string
	if e, ok := r.entries[rel]; ok && e.Def != nil && !e.Def.Nil && e.Def.From != nil {
		rs := &resolver{r: r}
		if d, derr := rs.refTarget(e.Def, rel); derr == nil && !d.registry && d.element == "" && d.entry != nil && d.entry.Path != rel {
			target = d.entry.Path
		}
	}
	r.mu.RUnlock()
	if target != "" {
		if tc, _ := r.Resolve(target); len(tc) > 1 {
			chain = append(chain, "joins "+tc[0])
			for _, s := range tc[1:] {
				chain = append(chain, "  "+s)
			}
		}
	}
	b.Chain = chain
	return b, err
}

// bindingLocked is Binding without the chain; r.mu is held.
func (r *Root) bindingLocked(rel string) (Binding, error) {
	b := Binding{Path: rel}
	e, ok := r.entries[rel]
	if !ok {
		return b, fmt.Errorf("registry: binding %s: %w", rel, ErrNotFound)
	}
	if e.Def == nil || (!e.good && e.Err != nil) {
		return b, e.Err
	}
	def := e.Def
	if def.Nil {
		return b, &ResolveError{File: rel, Line: def.Line, Msg: "null object: it is switched off", Err: ErrSwitchedOff}
	}
	if def.From != nil {
		// A repository object: joining it joins what its From chain names.
		rs := &resolver{r: r}
		d, err := rs.refTarget(def, rel)
		if err != nil {
			return b, err
		}
		if d.registry || d.element != "" || d.entry == nil || d.entry.Def == nil {
			return b, &ResolveError{File: rel, Line: def.Line, Err: ErrNotFound,
				Msg: fmt.Sprintf("%s names %s, which is not an object that can be joined", def.ID, d)}
		}
		if d.entry.Def.From != nil || d.entry == e {
			return b, &ResolveError{File: rel, Line: def.Line, Err: ErrCycle, Msg: fmt.Sprintf("%s names %s, itself a reference", def.ID, d.entry.Path)}
		}
		tb, err := r.bindingLocked(d.entry.Path)
		tb.Path = rel
		return tb, err
	}
	cls, typ, err := objects.TypeOf(def)
	b.Class, b.Type = cls, typ
	if err != nil {
		return b, &ResolveError{File: rel, Line: def.Line, Msg: err.Error(), Err: err}
	}
	switch cls.Category {
	case objects.CategoryStream, objects.CategoryText, objects.CategoryVariable:
	default:
		return b, nil
	}
	if cls.Category == objects.CategoryStream {
		b.History, _ = objects.History(def)
	}
	p, ok := def.Param(ChannelParam)
	if !ok || p.Value == nil || p.Value.Object == nil {
		line := def.Line
		if ok {
			line = p.Line
		}
		return b, &ResolveError{File: rel, Line: line, Err: ErrNoChannel,
			Msg: fmt.Sprintf("%s object has no Parameter %q holding a ReferenceObject (the channel)", cls.Name, ChannelParam)}
	}
	ch := p.Value.Object
	if ch.Nil || strings.TrimSpace(ch.ID) == "" {
		return b, &ResolveError{File: rel, Line: ch.Line, Err: ErrNoChannel, Msg: fmt.Sprintf("Parameter %q names no channel", ChannelParam)}
	}
	if ch.From == nil {
		return b, &ResolveError{File: rel, Line: ch.Line, Err: ErrNotClient,
			Msg: fmt.Sprintf("channel %s has no From naming its communication client (the relay client folder %s or the QSM client %s)", ch.ID, objects.KeyRelayClient, objects.KeyQSMClient)}
	}
	rs := &resolver{r: r}
	d, err := rs.from(ch.From, rel)
	if err != nil {
		return b, err
	}
	drv, ok := driverOf(d)
	if !ok {
		return b, &ResolveError{File: rel, Line: ch.From.Line, Err: ErrNotClient,
			Msg: fmt.Sprintf("channel %s: From resolves to %s, which is not a communication client (want the relay client folder %s or the QSM client %s)", ch.ID, d, objects.KeyRelayClient, objects.KeyQSMClient)}
	}
	b.Driver = drv
	b.ChannelID = objects.BaseID(ch.ID)
	b.ChannelName = b.ChannelID
	if c := r.channelLocked(ch.ID); c != nil {
		b.ChannelID = c.md.ID
		b.ChannelName = c.md.DisplayName()
	}
	b.DriverParams = driverParams(d.entry.Def)
	return b, nil
}

// driverParams flattens the settings of a driver's registry object.
func driverParams(o *objects.Object) map[string]string {
	out := map[string]string{}
	var walk func(prefix string, o *objects.Object, depth int)
	walk = func(prefix string, o *objects.Object, depth int) {
		if o == nil || depth > 8 {
			return
		}
		for _, p := range o.Parameters {
			if p.Value == nil {
				continue
			}
			v := p.Value
			switch {
			case v.Object != nil:
				walk(prefix+p.ID+".", v.Object, depth+1)
			case v.Class != nil:
			case len(v.Config) > 0:
				for _, c := range v.Config {
					if _, dup := out[c.Name]; !dup {
						out[c.Name] = c.Value
					}
				}
			default:
				out[prefix+p.ID] = strings.TrimSpace(v.Text)
			}
		}
	}
	walk("", o, 0)
	// An address found only in a nested object (e.g. "connection.address")
	// is the address.
	if _, ok := out["address"]; !ok {
		var keys []string
		for k := range out {
			if strings.HasSuffix(k, ".address") {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		if len(keys) > 0 {
			out["address"] = out[keys[0]]
		}
	}
	return out
}
