package services

import (
	"fmt"
	"maps"

	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/registry"
)

// maxDepth bounds the walk through nested objects and registry keys.
const maxDepth = 16

// Resolve walks a service definition: the object, the registry entries it
// refers to (by From or by key), its components and object-valued
// parameters, looking for a service class this project implements and
// collecting the settings on the way.
func Resolve(root *registry.Root, path string, def *objects.Object) (Definition, error) {
	d, found := resolve(root, path, def)
	if found == nil {
		return d, fmt.Errorf("%s: no service class this program implements was found in the definition", path)
	}
	d.Class = *found
	return d, nil
}

// Settings returns the flattened settings of any definition, walked as
// Resolve walks a service's (e.g. the relay client's "address").
func Settings(root *registry.Root, def *objects.Object) map[string]string {
	d, _ := resolve(root, "", def)
	return d.Params
}

func resolve(root *registry.Root, path string, def *objects.Object) (Definition, *objects.Class) {
	d := Definition{Path: path, Params: map[string]string{}}
	seen := map[string]bool{}
	var found *objects.Class
	var walk func(o *objects.Object, depth int) map[string]string
	walk = func(o *objects.Object, depth int) map[string]string {
		params := map[string]string{}
		if o == nil || o.Nil || depth > maxDepth {
			return params
		}
		// Registry objects this one refers to come first: this object's
		// own settings override theirs.
		key := objects.BaseID(o.ID)
		if e, ok := root.Key(key); ok && e.Def != nil && !seen[key] {
			seen[key] = true
			maps.Copy(params, walk(e.Def, depth+1))
		}
		if o.From != nil {
			maps.Copy(params, walk(o.From, depth+1))
		}
		for _, c := range o.Components {
			maps.Copy(params, walk(c.Object, depth+1))
		}
		if c, ok := objects.LookupClass(o.ID); ok && c.Category == objects.CategoryService && found == nil {
			found = &c
		}
		for _, p := range o.Parameters {
			v := p.Value
			if v == nil || v.Nil {
				continue
			}
			switch {
			case v.Object != nil:
				maps.Copy(params, walk(v.Object, depth+1))
			case v.Kind == objects.ValueConfiguration:
				for _, c := range v.Config {
					params[c.Name] = c.Value
				}
			case v.Class == nil:
				params[p.ID] = v.Text
			}
		}
		return params
	}
	d.Params = walk(def, 0)
	return d, found
}
