package objects

import (
	"errors"
	"strings"
)

// XML namespaces the files declare on <Root>.
const (
	nsXSI = "http://www.w3.org/2001/XMLSchema-instance"
	nsXSD = "http://www.w3.org/2001/XMLSchema"
)

// ErrNoObject is returned when marshaling a nil object.
var ErrNoObject = errors.New("objects: no object to write")

// MarshalFile writes the object as a .liveobject file: an XML declaration
// and a <Root> holding the object, indented by two spaces. Parsing the
// result gives the same model (line numbers aside).
func (o *Object) MarshalFile() ([]byte, error) {
	if o == nil {
		return nil, ErrNoObject
	}
	root := &Node{Name: "Root", Attrs: []Attr{{"xmlns:xsi", nsXSI}, {"xmlns:xsd", nsXSD}}}
	root.Attrs = append(root.Attrs, o.RootAttrs...)
	root.Children = append(root.Children, o.Head...)
	root.Children = append(root.Children, o.node("Object"))
	root.Children = append(root.Children, o.Tail...)
	var w writer
	w.b.WriteString(`<?xml version="1.0" encoding="utf-8"?>` + "\n")
	w.node(root, 0)
	return w.b.Bytes(), nil
}

// MarshalIndent writes just the object element (no declaration, no Root)
// as name, for showing a nested object.
func (o *Object) MarshalIndent(name string) []byte {
	var w writer
	w.node(o.node(name), 0)
	return w.b.Bytes()
}

// node converts the object into an element called name.
func (o *Object) node(name string) *Node {
	n := &Node{Name: name}
	if o.Kind != "" {
		n.Attrs = append(n.Attrs, Attr{"xsi:type", o.Kind})
	}
	if o.Nil {
		n.Attrs = append(n.Attrs, Attr{"xsi:nil", "true"})
	}
	if o.ID != "" {
		n.Attrs = append(n.Attrs, Attr{"id", o.ID})
	}
	n.Attrs = append(n.Attrs, o.ExtraAttrs...)
	o.children(n)
	return n
}

// children appends the object's child elements to n in the order the
// original platform wrote them.
func (o *Object) children(n *Node) {
	for _, a := range o.Attributes {
		c := &Node{Name: "Attribute", Attrs: []Attr{{"id", a.ID}, {"value", a.Value}}}
		c.Attrs = append(c.Attrs, a.ExtraAttrs...)
		c.Children = append(c.Children, a.Extra...)
		n.Children = append(n.Children, c)
	}
	if o.Class != nil {
		n.Children = append(n.Children, o.Class.node("ObjectClass", false))
	}
	if o.Authority != nil {
		n.Children = append(n.Children, o.Authority.node("Authority"))
	}
	for _, p := range o.Parameters {
		n.Children = append(n.Children, p.node())
	}
	if o.From != nil {
		n.Children = append(n.Children, o.From.node("From"))
	}
	for _, c := range o.Components {
		cn := &Node{Name: "Component"}
		if c.ID != "" {
			cn.Attrs = append(cn.Attrs, Attr{"id", c.ID})
		}
		cn.Attrs = append(cn.Attrs, c.ExtraAttrs...)
		if c.Object != nil {
			cn.Children = append(cn.Children, c.Object.node("Object"))
		}
		cn.Children = append(cn.Children, c.Extra...)
		n.Children = append(n.Children, cn)
	}
	for _, e := range o.Endpoints {
		en := &Node{Name: "Endpoint"}
		if e.ID != "" {
			en.Attrs = append(en.Attrs, Attr{"id", e.ID})
		}
		if e.From != "" {
			en.Attrs = append(en.Attrs, Attr{"from", e.From})
		}
		en.Attrs = append(en.Attrs, e.ExtraAttrs...)
		en.Children = append(en.Children, e.Extra...)
		n.Children = append(n.Children, en)
	}
	for _, c := range o.Connections {
		cn := &Node{Name: "Connection"}
		if c.From != "" {
			cn.Attrs = append(cn.Attrs, Attr{"from", c.From})
		}
		if c.To != "" {
			cn.Attrs = append(cn.Attrs, Attr{"to", c.To})
		}
		cn.Attrs = append(cn.Attrs, c.ExtraAttrs...)
		cn.Children = append(cn.Children, c.Extra...)
		n.Children = append(n.Children, cn)
	}
	n.Children = append(n.Children, o.Extra...)
}

func (p Parameter) node() *Node {
	n := &Node{Name: "Parameter"}
	if p.ID != "" {
		n.Attrs = append(n.Attrs, Attr{"id", p.ID})
	}
	n.Attrs = append(n.Attrs, p.ExtraAttrs...)
	if p.Value != nil {
		n.Children = append(n.Children, p.Value.node())
	}
	n.Children = append(n.Children, p.Extra...)
	return n
}

func (v *Value) node() *Node {
	switch {
	case v.Object != nil:
		if v.Object.Kind == "" && v.Kind != "" {
			o := *v.Object
			o.Kind = v.Kind
			return o.node("Value")
		}
		return v.Object.node("Value")
	case v.Class != nil:
		return v.Class.node("Value", true)
	}
	n := &Node{Name: "Value"}
	if v.Kind != "" {
		n.Attrs = append(n.Attrs, Attr{"xsi:type", v.Kind})
	}
	if v.Nil {
		n.Attrs = append(n.Attrs, Attr{"xsi:nil", "true"})
	}
	n.Attrs = append(n.Attrs, v.ExtraAttrs...)
	for _, c := range v.Config {
		cn := &Node{Name: "Parameter", Attrs: []Attr{{"name", c.Name}, {"value", c.Value}}}
		cn.Attrs = append(cn.Attrs, c.ExtraAttrs...)
		cn.Children = append(cn.Children, c.Extra...)
		n.Children = append(n.Children, cn)
	}
	n.Children = append(n.Children, v.Extra...)
	n.Text = v.Text
	if len(n.Children) > 0 {
		// Text next to children is read back trimmed.
		n.Text = strings.TrimSpace(n.Text)
	}
	return n
}

// node converts a class into an element; asValue writes the xsi:type of a
// class-valued Value.
func (c *ClassRef) node(name string, asValue bool) *Node {
	n := &Node{Name: name}
	if asValue {
		n.Attrs = append(n.Attrs, Attr{"xsi:type", c.Kind})
	}
	if c.ID != "" {
		n.Attrs = append(n.Attrs, Attr{"id", c.ID})
	}
	n.Attrs = append(n.Attrs, c.ExtraAttrs...)
	for _, p := range c.Parameters {
		n.Children = append(n.Children, p.node())
	}
	for _, k := range c.ObjectConstraints {
		n.Children = append(n.Children, k.node("ObjectConstraint"))
	}
	for _, k := range c.EndpointConstraints {
		n.Children = append(n.Children, k.node("EndpointConstraint"))
	}
	n.Children = append(n.Children, c.Extra...)
	return n
}

func (k Constraint) node(name string) *Node {
	n := &Node{Name: name}
	for _, a := range []Attr{{"name", k.Name}, {"kind", k.Kind}, {"class", k.Class}, {"value", k.Value}} {
		if a.Value != "" {
			n.Attrs = append(n.Attrs, a)
		}
	}
	n.Attrs = append(n.Attrs, k.ExtraAttrs...)
	n.Children = append(n.Children, k.Extra...)
	return n
}
