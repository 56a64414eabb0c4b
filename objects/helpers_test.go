package objects

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// stripLines zeroes every Line field below v (a pointer), so that models
// parsed from different texts can be compared.
func stripLines(v any) {
	stripValue(reflect.ValueOf(v))
}

func stripValue(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			stripValue(v.Elem())
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			stripValue(v.Index(i))
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < v.NumField(); i++ {
			f := v.Field(i)
			if t.Field(i).Name == "Line" && f.Kind() == reflect.Int && f.CanSet() {
				f.SetInt(0)
				continue
			}
			stripValue(f)
		}
	}
}

// roundTrip parses src, writes it, parses the result and checks that the
// two models are equal and that writing is stable. It returns the written
// bytes (nil if src does not parse).
func roundTrip(t testing.TB, name string, src []byte) []byte {
	t.Helper()
	o1, _ := ParseObjectProblems(name, bytes.NewReader(src))
	if o1 == nil {
		return nil
	}
	out1, err := o1.MarshalFile()
	if err != nil {
		t.Fatalf("%s: marshal: %v", name, err)
	}
	o2, probs := ParseObjectProblems(name, bytes.NewReader(out1))
	if o2 == nil {
		t.Fatalf("%s: written form does not parse: %v\n%s", name, probs, out1)
	}
	stripLines(o1)
	stripLines(o2)
	if !reflect.DeepEqual(o1, o2) {
		t.Fatalf("%s: parse -> write -> parse differs\nwritten:\n%s", name, out1)
	}
	out2, err := o2.MarshalFile()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out1, out2) {
		t.Fatalf("%s: writing is not stable:\n%s\n---\n%s", name, out1, out2)
	}
	return out1
}

const xmlHead = `<?xml version="1.0" encoding="utf-8"?>
<Root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
`

// doc wraps object XML lines in a Root, so that the object starts on line 3.
func doc(lines ...string) string {
	return xmlHead + strings.Join(lines, "\n") + "\n</Root>\n"
}
