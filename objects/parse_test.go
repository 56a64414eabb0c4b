package objects

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"
)

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // every problem, in order
	}{
		{"ok", doc(`<Object xsi:type="ReferenceObject" id="982130E40A294E3CAD5441841E87941E" />`), nil},
		{"null", doc(`<Object xsi:type="ReferenceObject" xsi:nil="true" />`), nil},
		{"parameter without id", doc(
			`<Object xsi:type="ReferenceObject" id="982130E40A294E3CAD5441841E87941E">`,
			`  <Parameter>`,
			`    <Value xsi:type="xsd:string">x</Value>`,
			`  </Parameter>`,
			`</Object>`),
			[]string{"f.liveobject:4: Parameter has no id"}},
		{"object without id", doc(`<Object xsi:type="ReferenceObject" />`),
			[]string{"f.liveobject:3: Object has no id"}},
		{"object without type", doc(`<Object id="982130E40A294E3CAD5441841E87941E" />`),
			[]string{`f.liveobject:3: Object has no xsi:type (want ReferenceObject or CompositeObject, or xsi:nil="true")`}},
		{"unknown object type", doc(`<Object xsi:type="TemplateObject" id="1" />`),
			[]string{`f.liveobject:3: Object has unknown xsi:type "TemplateObject" (want ReferenceObject or CompositeObject)`}},
		{"bad values", doc(
			`<Object xsi:type="ReferenceObject" id="1">`,
			`  <Parameter id="a"><Value xsi:type="xsd:int">2147483648</Value></Parameter>`,
			`  <Parameter id="b"><Value xsi:type="xsd:long">1.5</Value></Parameter>`,
			`  <Parameter id="c"><Value xsi:type="xsd:boolean">maybe</Value></Parameter>`,
			`  <Parameter id="d"><Value xsi:type="xsd:base64Binary">@@</Value></Parameter>`,
			`  <Parameter id="e"><Value xsi:type="xsd:int"> 42 </Value></Parameter>`,
			`  <Parameter id="f"><Value xsi:type="xsd:int" xsi:nil="true" /></Parameter>`,
			`</Object>`),
			[]string{
				`f.liveobject:4: Parameter "a": xsd:int value "2147483648" is not a 32-bit integer`,
				`f.liveobject:5: Parameter "b": xsd:long value "1.5" is not a 64-bit integer`,
				`f.liveobject:6: Parameter "c": xsd:boolean value "maybe" is not true, false, 1 or 0`,
				`f.liveobject:7: Parameter "d": xsd:base64Binary value is not base64: illegal base64 data at input byte 0`,
			}},
		{"composite parts", doc(
			`<Object xsi:type="CompositeObject" id="1">`,
			`  <Component><Object xsi:type="ReferenceObject" id="2" /></Component>`,
			`  <Component id="c" />`,
			`  <Endpoint from="c.x" />`,
			`  <Connection to="c.x" />`,
			`</Object>`),
			[]string{
				"f.liveobject:4: Component has no id",
				`f.liveobject:5: Component "c" has no Object`,
				"f.liveobject:6: Endpoint has no id",
				"f.liveobject:7: Connection has no from",
			}},
		{"duplicates", doc(
			`<Object xsi:type="ReferenceObject" id="1">`,
			`  <ObjectClass id="2" />`,
			`  <ObjectClass id="3" />`,
			`  <Parameter id="p"><Value xsi:type="xsd:int">1</Value><Value xsi:type="xsd:int">2</Value></Parameter>`,
			`  <From xsi:type="ReferenceObject" id="4" />`,
			`  <From xsi:type="ReferenceObject" id="5" />`,
			`</Object>`),
			[]string{
				"f.liveobject:5: Object has more than one ObjectClass (first on line 4)",
				`f.liveobject:6: Parameter "p" has more than one Value (first on line 6)`,
				"f.liveobject:8: Object has more than one From (first on line 7)",
			}},
		{"versioned ids", doc(
			"<Object xsi:type=\"ReferenceObject\" id=\"0`1:982130E40A294E3CAD5441841E87941E`2\">",
			"  <From xsi:type=\"ReferenceObject\" id=\"ns`x:1\" />",
			"</Object>"),
			[]string{"f.liveobject:4: From: id \"ns`x:1\": namespace: version \"x\" is not a number (want namespace`version:id`version)"}},
		{"attribute and config", doc(
			`<Object xsi:type="ReferenceObject" id="1">`,
			`  <Attribute value="v" />`,
			`  <Parameter id="c"><Value xsi:type="Configuration"><Parameter value="1" /></Value></Parameter>`,
			`  <ObjectClass />`,
			`</Object>`),
			[]string{
				"f.liveobject:4: Attribute has no id",
				`f.liveobject:5: Parameter "c": Configuration Parameter has no name`,
				"f.liveobject:6: ObjectClass has no id",
			}},
		{"two objects", doc(
			`<Object xsi:type="ReferenceObject" id="1" />`,
			`<Object xsi:type="ReferenceObject" id="2" />`),
			[]string{"f.liveobject:4: Root holds more than one Object (the first, on line 3, is used; this one is kept but ignored)"}},
		{"no object", doc(`<!-- nothing -->`), []string{"f.liveobject:2: Root holds no Object"}},
		{"not root", `<Metadata/>`, []string{"f.liveobject:1: top-level element is <Metadata>, want <Root> holding one <Object>"}},
		{"empty", ``, []string{"f.liveobject:1: no XML element in file"}},
		{"unclosed", doc(`<Object xsi:type="ReferenceObject" id="1">`), []string{"f.liveobject:4: </Root> closes <Object> opened on line 3"}},
		{"truncated", xmlHead + `<Object xsi:type="ReferenceObject" id="1">`, []string{"f.liveobject:3: file ends inside <Object> opened on line 3"}},
		{"bad xml", xmlHead + "<Object id=\"1\" id2=>\n</Root>", []string{"f.liveobject:3: XML syntax: unquoted or missing attribute value in element"}},
		{"attribute twice", doc(
			`<Object xsi:type="ReferenceObject" id="1">`,
			`  <Parameter id="a"><Value xsi:type="xsd:int" xsi:type="EndpointClass">1</Value></Parameter>`,
			`</Object>`),
			[]string{"f.liveobject:4: <Value> has the attribute xsi:type more than once; keep one of them (an XML element names each attribute once)"}},
		{"many attributes, one twice", doc(`<Object xsi:type="ReferenceObject" id="1" a0="" a1="" a2="" a3="" a4="" a5="" a6="" a7="" a8="" a9="" b0="" b1="" b2="" b3="" b4="" b5="" b6="" a3="" />`),
			[]string{"f.liveobject:3: <Object> has the attribute a3 more than once; keep one of them (an XML element names each attribute once)"}},
		{"two top-level", "<Root/>\n<Root/>", []string{"f.liveobject:2: second top-level element <Root> after </Root>"}},
		{"text outside", "<Root/>\nhello", []string{"f.liveobject:2: text outside the top-level element"}},
		{"bad encoding", `<?xml version="1.0" encoding="ebcdic"?><Root/>`, []string{`f.liveobject:1: XML: xml: encoding "ebcdic" declared but Decoder.CharsetReader is nil`}},
		{"stray text", doc(`<Object xsi:type="ReferenceObject" id="1">hello<Attribute id="a" value="b"/></Object>`),
			[]string{`f.liveobject:3: unexpected text "hello" in Object`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, probs := ParseObjectProblems("f.liveobject", strings.NewReader(tt.src))
			var got []string
			for _, p := range probs {
				got = append(got, p.Error())
			}
			if tt.name == "bad encoding" && len(got) == 1 && strings.Contains(got[0], "ebcdic") {
				return // the decoder's wording varies; the encoding is named
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tt.want)
			}
			_, err := ParseObject("f.liveobject", strings.NewReader(tt.src))
			if (err != nil) != (len(tt.want) > 0) {
				t.Errorf("ParseObject error = %v, want error %v", err, len(tt.want) > 0)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
		})
	}
}

func TestParseModel(t *testing.T) {
	src := doc(
		"<!-- head -->",
		"<Object xsi:type=\"ReferenceObject\" id=\"0`1:982130E40A294E3CAD5441841E87941E`2\" extra=\"kept\">",
		`  <Attribute id="9F4C608A9A6D44FFAD8A2FDC662E185B" value="Note &amp; co" />`,
		`  <Attribute id="07EC27D89CBD410DADE60463E4D46985" value="a comment" />`,
		`  <ObjectClass id="5C0DE1E7A5B94C2E8F6D7A3B2C1D0E9F">`,
		`    <Parameter id="MessageClass"><Value xsi:type="ValueClass" id="148B" /></Parameter>`,
		`    <ObjectConstraint name="n" kind="k" class="c" value="v" />`,
		`    <EndpointConstraint name="e" kind="Dual" class="24D8" value="x" />`,
		`  </ObjectClass>`,
		`  <Authority xsi:type="ReferenceObject" id="A1" />`,
		`  <Parameter id="s"><Value xsi:type="xsd:string"> two  spaces </Value></Parameter>`,
		`  <Parameter id="i"><Value xsi:type="xsd:int">7</Value></Parameter>`,
		`  <Parameter id="l"><Value xsi:type="xsd:long">-9</Value></Parameter>`,
		`  <Parameter id="b"><Value xsi:type="xsd:boolean">false</Value></Parameter>`,
		`  <Parameter id="bin"><Value xsi:type="xsd:base64Binary">aGk=</Value></Parameter>`,
		`  <Parameter id="none" />`,
		`  <Parameter id="nil"><Value xsi:nil="true" /></Parameter>`,
		`  <Parameter id="ic"><Value xsi:type="InterfaceClass" id="IC" /></Parameter>`,
		`  <Parameter id="ec"><Value xsi:type="EndpointClass" id="EC" /></Parameter>`,
		`  <Parameter id="oc"><Value xsi:type="ObjectClass" id="OC"><ObjectConstraint name="x" /></Value></Parameter>`,
		`  <Parameter id="cfg"><Value xsi:type="Configuration"><Parameter name="qsm" value="true" /></Value></Parameter>`,
		`  <Parameter id="ref"><Value xsi:type="ReferenceObject" id="CH"><From xsi:type="ReferenceObject" id="Qsm"><From xsi:type="ReferenceObject" id="K" /></From></Value></Parameter>`,
		`  <Parameter id="comp"><Value xsi:type="CompositeObject" id="CO"><Component id="a"><Object xsi:type="ReferenceObject" id="X" /></Component><Endpoint id="e" from="a.e" /><Connection from="a.e" to="a.f" /></Value></Parameter>`,
		`  <Parameter id="other"><Value xsi:type="Objects"><Object xsi:type="ReferenceObject" id="Y" /></Value></Parameter>`,
		`  <Unknown a="1"><Child /></Unknown>`,
		`  <!-- inside -->`,
		`</Object>`,
		`<!-- tail -->`)
	o, err := ParseObject("m.liveobject", strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", what, got, want)
		}
	}
	check("Kind", o.Kind, KindReference)
	check("ID", o.ID, "0`1:982130E40A294E3CAD5441841E87941E`2")
	check("Line", o.Line, 4)
	check("Name", o.Name(), "Note & co")
	check("Comment", o.Comment(), "a comment")
	check("ExtraAttrs", o.ExtraAttrs, []Attr{{"extra", "kept"}})
	check("Class.ID", o.Class.ID, "5C0DE1E7A5B94C2E8F6D7A3B2C1D0E9F")
	check("Class.Parameters[0].Value.Class.Kind", o.Class.Parameters[0].Value.Class.Kind, ValueValueClass)
	check("ObjectConstraints", o.Class.ObjectConstraints[0].Name+o.Class.ObjectConstraints[0].Kind+o.Class.ObjectConstraints[0].Class+o.Class.ObjectConstraints[0].Value, "nkcv")
	check("EndpointConstraints", o.Class.EndpointConstraints[0].Kind, "Dual")
	check("Authority", o.Authority.ID, "A1")
	param := func(id string) *Value {
		p, ok := o.Param(id)
		if !ok {
			t.Fatalf("no parameter %q", id)
		}
		return p.Value
	}
	check("s", param("s").Text, " two  spaces ")
	check("i", param("i").Kind+"="+param("i").Text, "xsd:int=7")
	check("l", param("l").Text, "-9")
	check("b", param("b").Text, "false")
	check("bin", param("bin").Text, "aGk=")
	check("none", param("none") == nil, true)
	check("nil", param("nil").Nil, true)
	check("ic", param("ic").Class.Kind+" "+param("ic").Class.ID, "InterfaceClass IC")
	check("ec", param("ec").Class.Kind, ValueEndpointClass)
	check("oc", param("oc").Class.ObjectConstraints[0].Name, "x")
	check("cfg", param("cfg").Config[0].Name+"="+param("cfg").Config[0].Value, "qsm=true")
	ref := param("ref").Object
	check("ref chain", ref.ID+"<"+ref.From.ID+"<"+ref.From.From.ID, "CH<Qsm<K")
	comp := param("comp").Object
	check("comp", comp.Kind, KindComposite)
	check("comp parts", len(comp.Components)+len(comp.Endpoints)+len(comp.Connections), 3)
	check("comp component", comp.Components[0].Object.ID, "X")
	check("comp connection", comp.Connections[0].From+">"+comp.Connections[0].To, "a.e>a.f")
	check("other kind", param("other").Kind, "Objects")
	check("other kept", param("other").Extra[0].Name, "Object")
	check("Extra", len(o.Extra), 2)
	check("Extra[0]", o.Extra[0].Name, "Unknown")
	check("Extra[1]", o.Extra[1].Comment, " inside ")
	check("Head", o.Head[0].Comment, " head ")
	check("Tail", o.Tail[0].Comment, " tail ")
	roundTrip(t, "m.liveobject", []byte(src))
}

func TestWrite(t *testing.T) {
	o := &Object{Kind: KindReference, ID: ClassStream}
	o.SetAttr(AttrName, `Chat "room" <1> & co`)
	o.SetParam("history", IntValue(100))
	o.SetParam("since", LongValue(-5))
	o.SetParam("on", BoolValue(true))
	o.SetParam("text", StringValue("line 1\nline 2\r"))
	ch := &Object{Kind: KindReference, ID: "00000000000000000000000000000002", From: &Object{Kind: KindReference, ID: KeyRelayClient}}
	o.SetParam("channel", ObjectValue(ch))
	o.SetParam("history", IntValue(50)) // replaces
	got, err := o.MarshalFile()
	if err != nil {
		t.Fatal(err)
	}
	want := `<?xml version="1.0" encoding="utf-8"?>
<Root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <Object xsi:type="ReferenceObject" id="046B83F2106872300FAEB7B9E4F28B09">
    <Attribute id="9F4C608A9A6D44FFAD8A2FDC662E185B" value="Chat &quot;room&quot; &lt;1&gt; &amp; co" />
    <Parameter id="history">
      <Value xsi:type="xsd:int">50</Value>
    </Parameter>
    <Parameter id="since">
      <Value xsi:type="xsd:long">-5</Value>
    </Parameter>
    <Parameter id="on">
      <Value xsi:type="xsd:boolean">true</Value>
    </Parameter>
    <Parameter id="text">
      <Value xsi:type="xsd:string">line 1
line 2&#xD;</Value>
    </Parameter>
    <Parameter id="channel">
      <Value xsi:type="ReferenceObject" id="00000000000000000000000000000002">
        <From xsi:type="ReferenceObject" id="011E83FA6A9F426993BB8EF26FF7D7B8" />
      </Value>
    </Parameter>
  </Object>
</Root>
`
	if string(got) != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	back, err := ParseObject("w", strings.NewReader(string(got)))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := back.Param("text"); p.Value.Text != "line 1\nline 2\r" {
		t.Errorf("text = %q", p.Value.Text)
	}
	if back.Name() != `Chat "room" <1> & co` {
		t.Errorf("name = %q", back.Name())
	}
	roundTrip(t, "w", got)

	// A Value whose object has no kind of its own takes the Value's.
	v := &Object{Kind: KindReference, ID: "1"}
	v.SetParam("p", &Value{Kind: KindReference, Object: &Object{ID: "2"}})
	got, _ = v.MarshalFile()
	if back, err := ParseObject("v", strings.NewReader(string(got))); err != nil || back.Parameters[0].Value.Object == nil {
		t.Errorf("object value without kind: %v\n%s", err, got)
	}

	// A null object and a composite.
	null := &Object{Kind: KindReference, Nil: true, Head: []*Node{{Comment: " off "}}}
	got, _ = null.MarshalFile()
	if !strings.Contains(string(got), "  <!-- off -->\n  <Object xsi:type=\"ReferenceObject\" xsi:nil=\"true\" />\n") {
		t.Errorf("null object written as\n%s", got)
	}
	if _, err := (*Object)(nil).MarshalFile(); !errors.Is(err, ErrNoObject) {
		t.Errorf("nil object: %v", err)
	}
	comp := &Object{Kind: KindComposite, ID: "C",
		Components:  []Component{{ID: "a", Object: &Object{Kind: KindReference, ID: "X"}}},
		Endpoints:   []Endpoint{{ID: "e", From: "a.e"}},
		Connections: []Connection{{From: "a.e", To: "b.e"}}}
	got, _ = comp.MarshalFile()
	for _, s := range []string{`<Component id="a">`, `<Object xsi:type="ReferenceObject" id="X" />`, `<Endpoint id="e" from="a.e" />`, `<Connection from="a.e" to="b.e" />`} {
		if !strings.Contains(string(got), s) {
			t.Errorf("composite lacks %s:\n%s", s, got)
		}
	}
	roundTrip(t, "c", got)
}

func TestUTF16(t *testing.T) {
	src := strings.ReplaceAll(`<?xml version="1.0" encoding="utf-16"?>
<Root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Object xsi:type="ReferenceObject" id="1">
    <Attribute id="9F4C608A9A6D44FFAD8A2FDC662E185B" value="Zürich ✓" />
  </Object>
</Root>`, "\n", "\r\n")
	u := utf16.Encode([]rune(src))
	le := []byte{0xFF, 0xFE}
	be := []byte{0xFE, 0xFF}
	for _, c := range u {
		le = append(le, byte(c), byte(c>>8))
		be = append(be, byte(c>>8), byte(c))
	}
	for name, data := range map[string][]byte{"le": le, "be": be, "le-nobom": le[2:], "be-nobom": be[2:], "utf8bom": append([]byte{0xEF, 0xBB, 0xBF}, src...)} {
		o, err := ParseObject(name, strings.NewReader(string(data)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if o.Name() != "Zürich ✓" || o.Attributes[0].Line != 4 {
			t.Errorf("%s: name %q line %d", name, o.Name(), o.Attributes[0].Line)
		}
	}
	if _, err := ParseObject("odd", strings.NewReader("\xFF\xFE<")); err == nil || !strings.Contains(err.Error(), "odd number of bytes") {
		t.Errorf("odd UTF-16: %v", err)
	}
	if _, err := ParseObject("latin1", strings.NewReader("<Root>\xE9</Root>")); err == nil || !strings.Contains(err.Error(), "not valid UTF-8") {
		t.Errorf("invalid UTF-8: %v", err)
	}
}

func TestLimits(t *testing.T) {
	deep := strings.Repeat("<a>", maxDepth+1) + strings.Repeat("</a>", maxDepth+1)
	if _, err := ParseObject("deep", strings.NewReader(deep)); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Errorf("deep: %v", err)
	}
	big := strings.NewReader(strings.Repeat(" ", MaxFileSize+1))
	if _, err := ParseObject("big", big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big: %v", err)
	}
}

// TestRoundTripTestdata parses, writes and parses again every definition
// and metadata file in the repository's testdata.
func TestRoundTripTestdata(t *testing.T) {
	n := 0
	err := filepath.WalkDir(filepath.Join("..", "testdata"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch {
		case strings.HasSuffix(p, ".liveobject"):
			n++
			roundTrip(t, p, data)
		case filepath.Base(p) == "metadata.xml":
			n++
			metadataRoundTrip(t, p, data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 20 {
		t.Fatalf("only %d files in testdata", n)
	}
}

func TestVersionedID(t *testing.T) {
	tests := []struct {
		in   string
		want VersionedID
		err  bool
	}{
		{in: "982130E40A294E3CAD5441841E87941E", want: VersionedID{ID: "982130E40A294E3CAD5441841E87941E"}},
		{in: "0`1:E3B07F4F4DFB496E8F7DC10660000B38`0", want: VersionedID{Namespace: "0", NamespaceVersion: 1, HasNSVersion: true, ID: "E3B07F4F4DFB496E8F7DC10660000B38", HasVersion: true}},
		{in: "ns:id", want: VersionedID{Namespace: "ns", ID: "id"}},
		{in: "id`7", want: VersionedID{ID: "id", Version: 7, HasVersion: true}},
		{in: "", err: true},
		{in: ":id", err: true},
		{in: "ns:", err: true},
		{in: "id`", err: true},
		{in: "id`x", err: true},
		{in: "a:b:c", err: true},
		{in: "a`1`2", err: true},
	}
	for _, tt := range tests {
		got, err := ParseVersionedID(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("%q: err %v", tt.in, err)
			continue
		}
		if err == nil {
			if got != tt.want {
				t.Errorf("%q: got %+v want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("%q: String() = %q", tt.in, got.String())
			}
		}
	}
	if BaseID("0`1:982130e40a294e3cad5441841e87941e`2") != ClassText {
		t.Errorf("BaseID does not reduce a versioned lower-case id")
	}
	if BaseID("bad`x") != "bad`x" {
		t.Errorf("BaseID changed an id it cannot parse")
	}
}

func TestChannelIDs(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id := NewChannelID()
		if !IsChannelID(id) || strings.ToUpper(id) != id || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
	for _, s := range []string{"", "Text_1", "00000000000000000000000000000001X", "0000000000000000000000000000000G"} {
		if IsChannelID(s) {
			t.Errorf("IsChannelID(%q) = true", s)
		}
	}
}
