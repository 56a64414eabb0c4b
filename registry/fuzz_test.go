package registry

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzRootDefinition writes arbitrary bytes as a registry entry, an
// example object, a service and a channel's metadata of a fresh root, and
// runs what the daemon runs over a root: Open, Problems, Resolve,
// Binding, SwitchService and ClassID. Bad content must come back as
// problems and errors, never as a panic or a hang.
func FuzzRootDefinition(f *testing.F) {
	files, err := InitFiles()
	if err != nil {
		f.Fatal(err)
	}
	for p, b := range files {
		if isDefinition(p) || filepath.Base(p) == MetadataFile {
			f.Add(b, uint8(len(p)))
		}
	}
	f.Add([]byte(objectXML("982130E40A294E3CAD5441841E87941E", "x", "00000000000000000000000000000001")), uint8(0))
	f.Add([]byte(head+`<Object xsi:type="ReferenceObject" id="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"><From xsi:type="ReferenceObject" id="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"/></Object></Root>`), uint8(1))
	dir := f.TempDir()
	if err := Init(dir); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, where uint8) {
		targets := []string{
			"registry/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/fuzz" + Ext,
			"examples/fuzz/x" + Ext,
			MOServiceFile,
			"channels/00000000000000000000000000000001/" + MetadataFile,
		}
		rel := targets[int(where)%len(targets)]
		p := filepath.Join(dir, filepath.FromSlash(rel))
		// The root is shared by the iterations: put the file back after.
		if orig, ok := files[rel]; ok {
			defer os.WriteFile(p, orig, 0o644)
		} else {
			defer os.RemoveAll(filepath.Dir(p))
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		r.Problems()
		for _, e := range r.Objects() {
			r.Resolve(e.Path)
			r.Binding(e.Path)
		}
		r.Channels()
		if isDefinition(rel) {
			SwitchService(dir, rel, false)
			SwitchService(dir, rel, true)
		}
		ClassID(string(data))
		r.Clean(string(data))
	})
}
