package objects

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// addTestdataSeeds adds every file of ../testdata whose name ends in
// suffix to the fuzz corpus.
func addTestdataSeeds(f *testing.F, suffix string) {
	_ = filepath.WalkDir(filepath.Join("..", "testdata"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, suffix) {
			if data, err := os.ReadFile(p); err == nil {
				f.Add(data)
			}
		}
		return nil
	})
}

// FuzzParseObject checks that the parser never panics, that every
// problem names the file and a line, and that whatever parses survives
// write -> parse unchanged.
func FuzzParseObject(f *testing.F) {
	addTestdataSeeds(f, ".liveobject")
	f.Add([]byte(doc(`<Object xsi:type="ReferenceObject" id="1"><Parameter id="p"><Value xsi:type="xsd:int">1</Value></Parameter></Object>`)))
	f.Add([]byte(doc(`<Object xsi:type="CompositeObject" id="1"><Component id="a"><Object xsi:type="ReferenceObject" xsi:nil="true"/></Component><Connection from="a" to="b"/></Object>`)))
	f.Add([]byte("<Root>\n<!-- c --><Object xsi:type=\"ReferenceObject\" id=\"x`1\">text<X a=\"&amp;\"/></Object>tail</Root>"))
	f.Add([]byte("\xFF\xFE<\x00R\x00/\x00>\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, probs := ParseObjectProblems("fuzz.liveobject", bytes.NewReader(data))
		for _, p := range probs {
			if p.File != "fuzz.liveobject" || p.Msg == "" || !strings.HasPrefix(p.Error(), "fuzz.liveobject") {
				t.Fatalf("problem without file or message: %#v", p)
			}
		}
		if o == nil {
			if len(probs) == 0 {
				t.Fatal("no object and no problem")
			}
			return
		}
		roundTrip(t, "fuzz.liveobject", data)
	})
}

// FuzzParseMetadata does the same for channel metadata.
func FuzzParseMetadata(f *testing.F) {
	addTestdataSeeds(f, "metadata.xml")
	f.Add([]byte("<Metadata><ID>1</ID><Name> n </Name><Comment>c&amp;d</Comment><MessageClass id=\"x\"/><X><Y/></X></Metadata>"))
	f.Add([]byte("<Metadata>\n<ID>1</ID>\n<ID>2</ID>\n</Metadata>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMetadata("metadata.xml", bytes.NewReader(data))
		if err != nil && !strings.HasPrefix(err.Error(), "metadata.xml") {
			t.Fatalf("error without file: %v", err)
		}
		if m == nil {
			if err == nil {
				t.Fatal("no metadata and no error")
			}
			return
		}
		metadataRoundTrip(t, "metadata.xml", data)
	})
}
