package objects

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func metadataRoundTrip(t testing.TB, name string, data []byte) {
	t.Helper()
	m1, err := ParseMetadata(name, bytes.NewReader(data))
	if m1 == nil {
		return
	}
	_ = err
	out, merr := m1.Marshal()
	if merr != nil {
		t.Fatal(merr)
	}
	m2, err2 := ParseMetadata(name, bytes.NewReader(out))
	if m2 == nil {
		t.Fatalf("%s: written metadata does not parse: %v\n%s", name, err2, out)
	}
	stripLines(m1)
	stripLines(m2)
	if !reflect.DeepEqual(m1, m2) {
		t.Fatalf("%s: metadata parse -> write -> parse differs:\n%#v\n%#v\n%s", name, m1, m2, out)
	}
	out2, _ := m2.Marshal()
	if !bytes.Equal(out, out2) {
		t.Fatalf("%s: metadata writing not stable", name)
	}
}

func TestMetadata(t *testing.T) {
	src := `<Metadata>
  <ID>00000000000000000000000000000001</ID>
  <Name>Text_1</Name>
  <Comment>This is a channel for a shared text note.</Comment>
  <MessageClass id="982130E40A294E3CAD5441841E87941E" />
  <CheckpointClass id="982130E40A294E3CAD5441841E87941E" />
  <Owner>ops</Owner>
</Metadata>`
	m, err := ParseMetadata("channels/1/metadata.xml", strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	want := Metadata{ID: "00000000000000000000000000000001", Name: "Text_1", Comment: "This is a channel for a shared text note.",
		MessageClass: ClassText, CheckpointClass: ClassText}
	if m.ID != want.ID || m.Name != want.Name || m.Comment != want.Comment || m.MessageClass != want.MessageClass || m.CheckpointClass != want.CheckpointClass {
		t.Errorf("got %+v", m)
	}
	if len(m.Extra) != 1 || m.Extra[0].Name != "Owner" || m.Extra[0].Text != "ops" {
		t.Errorf("unknown element not kept: %+v", m.Extra)
	}
	out, _ := m.Marshal()
	if !strings.Contains(string(out), "<Owner>ops</Owner>") {
		t.Errorf("unknown element not written:\n%s", out)
	}
	metadataRoundTrip(t, "m", []byte(src))
	if m.DisplayName() != "Text_1" || (&Metadata{ID: "X"}).DisplayName() != "X" {
		t.Errorf("DisplayName")
	}

	bad := []struct{ src, want string }{
		{`<Metadata><Name>x</Name></Metadata>`, "f:1: Metadata has no ID"},
		{"<Metadata>\n<ID>1</ID>\n<ID>2</ID>\n</Metadata>", "f:3: Metadata has more than one ID (first on line 2)"},
		{"<Metadata>\n<ID>1</ID>\n<MessageClass />\n</Metadata>", "f:3: MessageClass has no id"},
		{"<Root/>", "f:1: top-level element is <Root>, want <Metadata>"},
		{"<Metadata>\n<ID>1</ID>\n<Name>x", "f:3: file ends inside <Name> opened on line 3"},
		{"<Metadata>\n<ID>1<b/></ID>\n</Metadata>", "f:2: ID has unexpected child elements (they are not kept)"},
		{"<Metadata>\n<ID>1</ID>\n<MessageClass id=\"x\" version=\"2\" />\n</Metadata>", "f:3: MessageClass has an unexpected attribute version (it is not kept)"},
	}
	for _, b := range bad {
		_, err := ParseMetadata("f", strings.NewReader(b.src))
		if err == nil || err.Error() != b.want {
			t.Errorf("%q: got %v, want %s", b.src, err, b.want)
		}
	}
}
