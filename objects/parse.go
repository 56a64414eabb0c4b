package objects

import (
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ParseObject parses a .liveobject file: a <Root> holding one <Object>.
// file names the file in error messages. On a syntax error it returns nil
// and a *ParseError; when the XML is well formed but the definition has
// problems (a Parameter without an id, a bad xsd:int, ...) it returns the
// object as far as it could be built together with the first problem.
// ParseObjectProblems returns every problem.
func ParseObject(file string, r io.Reader) (*Object, error) {
	o, probs := ParseObjectProblems(file, r)
	if len(probs) > 0 {
		return o, probs[0]
	}
	return o, nil
}

// ParseObjectProblems is ParseObject returning every problem found, in
// file order. The object is nil only when the file is not well-formed XML
// or has no Object at all.
func ParseObjectProblems(file string, r io.Reader) (*Object, []*ParseError) {
	root, prolog, textLines, err := parseTree(file, r)
	if err != nil {
		return nil, []*ParseError{err.(*ParseError)}
	}
	b := &builder{file: file, textLines: textLines}
	if localName(root.Name) != "Root" {
		b.problem(root.Line, "top-level element is <%s>, want <Root> holding one <Object>", root.Name)
		return nil, b.probs
	}
	var obj *Object
	var head, tail []*Node
	head = append(head, prolog...)
	var rootAttrs []Attr
	for _, a := range root.Attrs {
		if !isNamespaceDecl(a.Name) {
			rootAttrs = append(rootAttrs, a)
		}
	}
	for _, c := range root.Children {
		if c.Name != "" && localName(c.Name) == "Object" {
			if obj == nil {
				obj = b.object(c, "Object")
				continue
			}
			b.problem(c.Line, "Root holds more than one Object (the first, on line %d, is used; this one is kept but ignored)", obj.Line)
		}
		if c.Name == "" && c.Comment == "" && c.Text != "" {
			b.problem(c.Line, "unexpected text in Root")
		}
		if obj == nil {
			head = append(head, c)
		} else {
			tail = append(tail, c)
		}
	}
	if root.Text != "" {
		b.problem(b.textLine(root), "unexpected text %q in Root", clip(root.Text))
		tail = append(tail, &Node{Text: root.Text, Line: b.textLine(root)})
	}
	if obj == nil {
		b.problem(root.Line, "Root holds no Object")
		return nil, b.probs
	}
	obj.Head, obj.Tail = head, tail
	obj.RootAttrs = rootAttrs
	return obj, b.probs
}

func isNamespaceDecl(name string) bool {
	return name == "xmlns" || strings.HasPrefix(name, "xmlns:")
}

// builder turns Node trees into the model, collecting problems.
type builder struct {
	file      string
	probs     []*ParseError
	textLines map[*Node]int
}

func (b *builder) problem(line int, format string, a ...any) {
	b.probs = append(b.probs, &ParseError{File: b.file, Line: line, Msg: fmt.Sprintf(format, a...)})
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// xsiAttr reports whether an attribute name is xsi:<local>.
func xsiAttr(name, local string) bool {
	return name == "xsi:"+local
}

func isTrue(s string) bool {
	s = strings.TrimSpace(s)
	return s == "true" || s == "1"
}

// textChild keeps stray text of an element with children as a text node.
func (b *builder) strayText(n *Node, what string, extra *[]*Node) {
	// Stray text is kept trimmed: it is written on a line of its own.
	if t := strings.TrimSpace(n.Text); t != "" {
		b.problem(b.textLine(n), "unexpected text %q in %s", clip(t), what)
		*extra = append(*extra, &Node{Text: t, Line: b.textLine(n)})
	}
}

// textLine is the line of an element's text (its own line if unknown).
func (b *builder) textLine(n *Node) int {
	if l, ok := b.textLines[n]; ok {
		return l
	}
	return n.Line
}

// object builds an Object from an element whose attributes are the
// object's (an <Object>, <From>, <Authority> or object-valued <Value>).
// elem names the element in messages.
func (b *builder) object(n *Node, elem string) *Object {
	o := &Object{Line: n.Line}
	hasID := false
	for _, a := range n.Attrs {
		switch {
		case xsiAttr(a.Name, "type"):
			o.Kind = a.Value
		case xsiAttr(a.Name, "nil"):
			o.Nil = isTrue(a.Value)
			if !o.Nil {
				o.ExtraAttrs = append(o.ExtraAttrs, a)
			}
		case a.Name == "id":
			o.ID = a.Value
			hasID = true
		default:
			o.ExtraAttrs = append(o.ExtraAttrs, a)
		}
	}
	if !o.Nil {
		switch o.Kind {
		case KindReference, KindComposite:
		case "":
			b.problem(n.Line, "%s has no xsi:type (want ReferenceObject or CompositeObject, or xsi:nil=\"true\")", elem)
		default:
			b.problem(n.Line, "%s has unknown xsi:type %q (want ReferenceObject or CompositeObject)", elem, o.Kind)
		}
		if !hasID || strings.TrimSpace(o.ID) == "" {
			b.problem(n.Line, "%s has no id", elem)
		}
	}
	b.checkID(n.Line, elem, o.ID)
	b.strayText(n, elem, &o.Extra)
	for _, c := range n.Children {
		if c.Name == "" {
			o.Extra = append(o.Extra, c)
			continue
		}
		switch localName(c.Name) {
		case "Attribute":
			o.Attributes = append(o.Attributes, b.attribute(c))
		case "ObjectClass":
			if o.Class != nil {
				b.problem(c.Line, "%s has more than one ObjectClass (first on line %d)", elem, o.Class.Line)
				o.Extra = append(o.Extra, c)
				continue
			}
			o.Class = b.class(c, ValueObjectClass, "ObjectClass")
		case "Authority":
			if o.Authority != nil {
				b.problem(c.Line, "%s has more than one Authority", elem)
				o.Extra = append(o.Extra, c)
				continue
			}
			o.Authority = b.object(c, "Authority")
		case "Parameter":
			o.Parameters = append(o.Parameters, b.parameter(c))
		case "From":
			if o.From != nil {
				b.problem(c.Line, "%s has more than one From (first on line %d)", elem, o.From.Line)
				o.Extra = append(o.Extra, c)
				continue
			}
			o.From = b.object(c, "From")
		case "Component":
			o.Components = append(o.Components, b.component(c))
		case "Endpoint":
			o.Endpoints = append(o.Endpoints, b.endpoint(c))
		case "Connection":
			o.Connections = append(o.Connections, b.connection(c))
		default:
			o.Extra = append(o.Extra, c)
		}
	}
	return o
}

func (b *builder) checkID(line int, elem, id string) {
	if strings.ContainsAny(id, ":`") {
		if _, err := ParseVersionedID(id); err != nil {
			b.problem(line, "%s: %v (want namespace`version:id`version)", elem, err)
		}
	}
}

func (b *builder) attribute(n *Node) Attribute {
	a := Attribute{Line: n.Line}
	hasID := false
	for _, x := range n.Attrs {
		switch x.Name {
		case "id":
			a.ID, hasID = x.Value, true
		case "value":
			a.Value = x.Value
		default:
			a.ExtraAttrs = append(a.ExtraAttrs, x)
		}
	}
	if !hasID || a.ID == "" {
		b.problem(n.Line, "Attribute has no id")
	}
	b.strayText(n, "Attribute", &a.Extra)
	a.Extra = append(a.Extra, n.Children...)
	return a
}

func (b *builder) parameter(n *Node) Parameter {
	p := Parameter{Line: n.Line}
	hasID := false
	for _, x := range n.Attrs {
		if x.Name == "id" {
			p.ID, hasID = x.Value, true
			continue
		}
		p.ExtraAttrs = append(p.ExtraAttrs, x)
	}
	if !hasID || p.ID == "" {
		b.problem(n.Line, "Parameter has no id")
	}
	b.strayText(n, fmt.Sprintf("Parameter %q", p.ID), &p.Extra)
	for _, c := range n.Children {
		if c.Name != "" && localName(c.Name) == "Value" {
			if p.Value != nil {
				b.problem(c.Line, "Parameter %q has more than one Value (first on line %d)", p.ID, p.Value.Line)
				p.Extra = append(p.Extra, c)
				continue
			}
			p.Value = b.value(c, p.ID)
			continue
		}
		p.Extra = append(p.Extra, c)
	}
	return p
}

// value builds a parameter's Value; param names the parameter in messages.
func (b *builder) value(n *Node, param string) *Value {
	kind := ""
	isNil := false
	for _, x := range n.Attrs {
		if xsiAttr(x.Name, "type") {
			kind = x.Value
		}
		if xsiAttr(x.Name, "nil") && isTrue(x.Value) {
			isNil = true
		}
	}
	v := &Value{Kind: kind, Nil: isNil, Line: n.Line}
	where := fmt.Sprintf("Parameter %q", param)
	switch kind {
	case KindReference, KindComposite:
		v.Object = b.object(n, where+" Value")
		return v
	case ValueValueClass, ValueObjectClass, ValueInterfaceClass, ValueEndpointClass:
		v.Class = b.class(n, kind, where+" "+kind)
		return v
	}
	for _, x := range n.Attrs {
		if xsiAttr(x.Name, "type") || (xsiAttr(x.Name, "nil") && isTrue(x.Value)) {
			continue
		}
		v.ExtraAttrs = append(v.ExtraAttrs, x)
	}
	if kind == ValueConfiguration {
		b.strayText(n, where+" Configuration", &v.Extra)
		for _, c := range n.Children {
			if c.Name != "" && localName(c.Name) == "Parameter" {
				v.Config = append(v.Config, b.configParam(c, param))
				continue
			}
			v.Extra = append(v.Extra, c)
		}
		return v
	}
	v.Text = n.Text
	v.Extra = append(v.Extra, n.Children...)
	if isNil {
		return v
	}
	t := strings.TrimSpace(v.Text)
	switch localName(kind) {
	case "int":
		if _, err := strconv.ParseInt(t, 10, 32); err != nil {
			b.problem(n.Line, "%s: xsd:int value %q is not a 32-bit integer", where, clip(v.Text))
		}
	case "long":
		if _, err := strconv.ParseInt(t, 10, 64); err != nil {
			b.problem(n.Line, "%s: xsd:long value %q is not a 64-bit integer", where, clip(v.Text))
		}
	case "boolean":
		if t != "true" && t != "false" && t != "1" && t != "0" {
			b.problem(n.Line, "%s: xsd:boolean value %q is not true, false, 1 or 0", where, clip(v.Text))
		}
	case "base64Binary":
		if _, err := base64.StdEncoding.DecodeString(stripSpace(t)); err != nil {
			b.problem(n.Line, "%s: xsd:base64Binary value is not base64: %v", where, err)
		}
	}
	return v
}

func stripSpace(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
			return -1
		}
		return r
	}, s)
}

func (b *builder) configParam(n *Node, param string) ConfigParam {
	c := ConfigParam{Line: n.Line}
	hasName := false
	for _, x := range n.Attrs {
		switch x.Name {
		case "name":
			c.Name, hasName = x.Value, true
		case "value":
			c.Value = x.Value
		default:
			c.ExtraAttrs = append(c.ExtraAttrs, x)
		}
	}
	if !hasName || c.Name == "" {
		b.problem(n.Line, "Parameter %q: Configuration Parameter has no name", param)
	}
	b.strayText(n, "Configuration Parameter", &c.Extra)
	c.Extra = append(c.Extra, n.Children...)
	return c
}

func (b *builder) class(n *Node, kind, elem string) *ClassRef {
	c := &ClassRef{Kind: kind, Line: n.Line}
	hasID := false
	for _, x := range n.Attrs {
		switch {
		case x.Name == "id":
			c.ID, hasID = x.Value, true
		case xsiAttr(x.Name, "type") && x.Value == kind && elem != "ObjectClass":
			// the Value's own kind
		default:
			c.ExtraAttrs = append(c.ExtraAttrs, x)
		}
	}
	if !hasID || c.ID == "" {
		b.problem(n.Line, "%s has no id", elem)
	}
	b.checkID(n.Line, elem, c.ID)
	b.strayText(n, elem, &c.Extra)
	for _, ch := range n.Children {
		if ch.Name == "" {
			c.Extra = append(c.Extra, ch)
			continue
		}
		switch localName(ch.Name) {
		case "Parameter":
			c.Parameters = append(c.Parameters, b.parameter(ch))
		case "ObjectConstraint":
			c.ObjectConstraints = append(c.ObjectConstraints, b.constraint(ch))
		case "EndpointConstraint":
			c.EndpointConstraints = append(c.EndpointConstraints, b.constraint(ch))
		default:
			c.Extra = append(c.Extra, ch)
		}
	}
	return c
}

func (b *builder) constraint(n *Node) Constraint {
	c := Constraint{Line: n.Line}
	for _, x := range n.Attrs {
		switch x.Name {
		case "name":
			c.Name = x.Value
		case "kind":
			c.Kind = x.Value
		case "class":
			c.Class = x.Value
		case "value":
			c.Value = x.Value
		default:
			c.ExtraAttrs = append(c.ExtraAttrs, x)
		}
	}
	b.strayText(n, localName(n.Name), &c.Extra)
	c.Extra = append(c.Extra, n.Children...)
	return c
}

func (b *builder) component(n *Node) Component {
	c := Component{Line: n.Line}
	hasID := false
	for _, x := range n.Attrs {
		if x.Name == "id" {
			c.ID, hasID = x.Value, true
			continue
		}
		c.ExtraAttrs = append(c.ExtraAttrs, x)
	}
	if !hasID || c.ID == "" {
		b.problem(n.Line, "Component has no id")
	}
	b.strayText(n, "Component", &c.Extra)
	for _, ch := range n.Children {
		if ch.Name != "" && localName(ch.Name) == "Object" && c.Object == nil {
			c.Object = b.object(ch, fmt.Sprintf("Component %q Object", c.ID))
			continue
		}
		c.Extra = append(c.Extra, ch)
	}
	if c.Object == nil {
		b.problem(n.Line, "Component %q has no Object", c.ID)
	}
	return c
}

func (b *builder) endpoint(n *Node) Endpoint {
	e := Endpoint{Line: n.Line}
	hasID := false
	for _, x := range n.Attrs {
		switch x.Name {
		case "id":
			e.ID, hasID = x.Value, true
		case "from":
			e.From = x.Value
		default:
			e.ExtraAttrs = append(e.ExtraAttrs, x)
		}
	}
	if !hasID || e.ID == "" {
		b.problem(n.Line, "Endpoint has no id")
	}
	b.strayText(n, "Endpoint", &e.Extra)
	e.Extra = append(e.Extra, n.Children...)
	return e
}

func (b *builder) connection(n *Node) Connection {
	c := Connection{Line: n.Line}
	hasFrom, hasTo := false, false
	for _, x := range n.Attrs {
		switch x.Name {
		case "from":
			c.From, hasFrom = x.Value, true
		case "to":
			c.To, hasTo = x.Value, true
		default:
			c.ExtraAttrs = append(c.ExtraAttrs, x)
		}
	}
	if !hasFrom || c.From == "" {
		b.problem(n.Line, "Connection has no from")
	}
	if !hasTo || c.To == "" {
		b.problem(n.Line, "Connection has no to")
	}
	b.strayText(n, "Connection", &c.Extra)
	c.Extra = append(c.Extra, n.Children...)
	return c
}
