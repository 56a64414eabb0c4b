package objects

// The XML model of a .liveobject file. Every element and attribute the
// model knows has a field; everything else is kept verbatim in ExtraAttrs
// and Extra so that writing a parsed file loses nothing. Line fields hold
// the line of the element's start tag in the source file (0 for objects
// built in code); they are not written.

// Object kinds as they appear in xsi:type.
const (
	KindReference = "ReferenceObject"
	KindComposite = "CompositeObject"
)

// Value kinds as they appear in a Value's xsi:type.
const (
	ValueString         = "xsd:string"
	ValueInt            = "xsd:int"
	ValueLong           = "xsd:long"
	ValueBoolean        = "xsd:boolean"
	ValueBase64         = "xsd:base64Binary"
	ValueReferenceObj   = KindReference
	ValueCompositeObj   = KindComposite
	ValueValueClass     = "ValueClass"
	ValueObjectClass    = "ObjectClass"
	ValueInterfaceClass = "InterfaceClass"
	ValueEndpointClass  = "EndpointClass"
	ValueConfiguration  = "Configuration"
)

// Object is one live object definition: the <Object> of a file's <Root>,
// or any nested object (a From, an Authority, a Component's Object, a
// Value holding an object). The zero Object is not useful; build objects
// with a Kind and an ID, or parse them with ParseObject.
type Object struct {
	// Kind is the xsi:type as written: KindReference, KindComposite, or
	// any other name (kept, reported by Problems).
	Kind string
	// Nil marks a null object (xsi:nil="true"): a switched-off service.
	Nil bool
	// ID is the object's id: for a ReferenceObject without From, the id of
	// its class; with a From, a key in the dictionary From names. It may
	// carry versions (see ParseVersionedID).
	ID string
	// Line is the line of the start tag.
	Line int

	// Attributes are the <Attribute id value/> entries in order.
	Attributes []Attribute
	// Class is the optional <ObjectClass>: the type the object is expected
	// to have.
	Class *ClassRef
	// Authority is the optional <Authority> object.
	Authority *Object
	// Parameters are the <Parameter> entries in order.
	Parameters []Parameter
	// From is the dictionary this (reference) object is taken from.
	From *Object
	// Components, Endpoints and Connections belong to a CompositeObject.
	Components  []Component
	Endpoints   []Endpoint
	Connections []Connection

	// ExtraAttrs are attributes the model does not know, in order.
	ExtraAttrs []Attr
	// Extra are child elements and comments the model does not know, in
	// order. They are written after the known children.
	Extra []*Node

	// Head and Tail are comments and unknown elements inside the file's
	// <Root> before and after the Object (top-level objects only).
	Head, Tail []*Node
	// RootAttrs are attributes of <Root> other than namespace
	// declarations (top-level objects only).
	RootAttrs []Attr
}

// Attribute is an <Attribute id="..." value="..."/>: a named annotation
// such as the display name (AttrName) or a comment (AttrComment).
type Attribute struct {
	ID, Value  string
	Line       int
	ExtraAttrs []Attr
	Extra      []*Node
}

// Parameter is a <Parameter id="..."> with an optional <Value>.
type Parameter struct {
	ID string
	// Value is nil for a parameter written without a value.
	Value      *Value
	Line       int
	ExtraAttrs []Attr
	Extra      []*Node
}

// Value is a parameter's <Value xsi:type="...">. Which field is set
// depends on Kind:
//
//	xsd:string, xsd:int, xsd:long, xsd:boolean, xsd:base64Binary: Text
//	ReferenceObject, CompositeObject: Object (whose Kind equals Kind)
//	ValueClass, ObjectClass, InterfaceClass, EndpointClass: Class
//	Configuration: Config
//
// Other kinds keep their text in Text and their children in Extra.
type Value struct {
	// Kind is the xsi:type as written (prefix included, e.g. "xsd:int").
	Kind string
	// Nil marks xsi:nil="true".
	Nil    bool
	Text   string
	Object *Object
	Class  *ClassRef
	Config []ConfigParam
	Line   int
	// ExtraAttrs and Extra keep what the model does not know.
	ExtraAttrs []Attr
	Extra      []*Node
}

// ClassRef names a class: an <ObjectClass> element, or a Value of kind
// ValueClass, ObjectClass, InterfaceClass or EndpointClass. Classes may be
// parameterized and (object classes) constrained.
type ClassRef struct {
	// Kind is ValueObjectClass, ValueValueClass, ValueInterfaceClass or
	// ValueEndpointClass (for an <ObjectClass> element, ValueObjectClass).
	Kind                string
	ID                  string
	Parameters          []Parameter
	ObjectConstraints   []Constraint
	EndpointConstraints []Constraint
	Line                int
	ExtraAttrs          []Attr
	Extra               []*Node
}

// Constraint is an <ObjectConstraint> or <EndpointConstraint name kind
// class value/>.
type Constraint struct {
	Name, Kind, Class, Value string
	Line                     int
	ExtraAttrs               []Attr
	Extra                    []*Node
}

// ConfigParam is one name/value setting of a Configuration value, written
// <Parameter name="..." value="..."/>.
type ConfigParam struct {
	Name, Value string
	Line        int
	ExtraAttrs  []Attr
	Extra       []*Node
}

// Component is a CompositeObject's <Component id><Object .../></Component>.
type Component struct {
	ID         string
	Object     *Object
	Line       int
	ExtraAttrs []Attr
	Extra      []*Node
}

// Endpoint is a CompositeObject's <Endpoint id from/>: an endpoint of the
// composite, exported from a component ("component.endpoint").
type Endpoint struct {
	ID, From   string
	Line       int
	ExtraAttrs []Attr
	Extra      []*Node
}

// Connection is a CompositeObject's <Connection from to/>.
type Connection struct {
	From, To   string
	Line       int
	ExtraAttrs []Attr
	Extra      []*Node
}

// Attr is an XML attribute kept verbatim: Name is written as it was read,
// namespace prefix included ("xsi:foo").
type Attr struct {
	Name, Value string
}

// Node is an XML element or comment the model does not know, kept
// verbatim with its attributes, text and children.
type Node struct {
	// Name is the element name as written (prefix included); empty for a
	// comment.
	Name string
	// Comment is the text of an XML comment (Name is empty then).
	Comment  string
	Attrs    []Attr
	Text     string
	Children []*Node
	Line     int
}

// Attr returns the value of the object's Attribute with the given id.
func (o *Object) Attr(id string) (string, bool) {
	if o == nil {
		return "", false
	}
	for _, a := range o.Attributes {
		if a.ID == id {
			return a.Value, true
		}
	}
	return "", false
}

// Name returns the object's display name (AttrName), or "".
func (o *Object) Name() string {
	v, _ := o.Attr(AttrName)
	return v
}

// Comment returns the object's comment attribute (AttrComment), or "".
func (o *Object) Comment() string {
	v, _ := o.Attr(AttrComment)
	return v
}

// Param returns the object's Parameter with the given id.
func (o *Object) Param(id string) (*Parameter, bool) {
	if o == nil {
		return nil, false
	}
	for i := range o.Parameters {
		if o.Parameters[i].ID == id {
			return &o.Parameters[i], true
		}
	}
	return nil, false
}

// SetAttr sets (or adds) the Attribute with the given id.
func (o *Object) SetAttr(id, value string) {
	for i := range o.Attributes {
		if o.Attributes[i].ID == id {
			o.Attributes[i].Value = value
			return
		}
	}
	o.Attributes = append(o.Attributes, Attribute{ID: id, Value: value})
}

// SetParam sets (or adds) the Parameter with the given id.
func (o *Object) SetParam(id string, v *Value) {
	for i := range o.Parameters {
		if o.Parameters[i].ID == id {
			o.Parameters[i].Value = v
			return
		}
	}
	o.Parameters = append(o.Parameters, Parameter{ID: id, Value: v})
}

// StringValue returns an xsd:string Value.
func StringValue(s string) *Value { return &Value{Kind: ValueString, Text: s} }

// IntValue returns an xsd:int Value.
func IntValue(n int) *Value { return &Value{Kind: ValueInt, Text: itoa(int64(n))} }

// LongValue returns an xsd:long Value.
func LongValue(n int64) *Value { return &Value{Kind: ValueLong, Text: itoa(n)} }

// BoolValue returns an xsd:boolean Value.
func BoolValue(b bool) *Value {
	if b {
		return &Value{Kind: ValueBoolean, Text: "true"}
	}
	return &Value{Kind: ValueBoolean, Text: "false"}
}

// ObjectValue returns a Value holding o (its Kind becomes the Value's kind).
func ObjectValue(o *Object) *Value {
	k := o.Kind
	if k == "" {
		k = KindReference
		o.Kind = k
	}
	return &Value{Kind: k, Object: o}
}
