package objects

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// rawNode is the baseline: encoding/xml's generic unmarshal of the same
// document, with no model, no line numbers and no checks.
type rawNode struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []rawNode  `xml:",any"`
}

// BenchmarkParseObject parses a definition with every construct and, in
// the same run, unmarshals it with encoding/xml into a generic tree; it
// reports how many times slower the model parser is ("x-encoding/xml").
func BenchmarkParseObject(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("..", "testdata", "roots", "sample", "examples", "advanced", "every value.liveobject"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := ParseObject("f", bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
	model := time.Since(start)
	start = time.Now()
	for i := 0; i < b.N; i++ {
		var n rawNode
		if err := xml.Unmarshal(data, &n); err != nil {
			b.Fatal(err)
		}
	}
	raw := time.Since(start)
	b.ReportMetric(float64(model)/float64(raw), "x-encoding/xml")
	b.ReportMetric(float64(model.Nanoseconds())/float64(b.N), "ns/parse")
}
