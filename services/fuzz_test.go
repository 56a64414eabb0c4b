package services_test

import (
	"bytes"
	"testing"

	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/registry"
	"github.com/liveobjects/liveobjects/services"
)

// FuzzResolve walks arbitrary service definitions through a real root's
// registry, as the Host does when a services/ file changes: it must end
// (nested objects, registry keys that refer to each other) and never
// panic.
func FuzzResolve(f *testing.F) {
	files, err := registry.InitFiles()
	if err != nil {
		f.Fatal(err)
	}
	for p, b := range files {
		if len(p) > len("services/") && p[:len("services/")] == "services/" {
			f.Add(b)
		}
	}
	f.Add([]byte(`<Root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><Object xsi:type="ReferenceObject" id="` + registry.InitTextChannel + `"><From xsi:type="ReferenceObject" id="` + objects.KeyRelayServer + `"/></Object></Root>`))
	dir := f.TempDir()
	if err := registry.Init(dir); err != nil {
		f.Fatal(err)
	}
	root, err := registry.Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { root.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		def, _ := objects.ParseObjectProblems("services/fuzz.liveobject", bytes.NewReader(data))
		if def == nil {
			return
		}
		d, err := services.Resolve(root, "services/fuzz.liveobject", def)
		if err == nil && d.Class.ID == "" {
			t.Fatal("resolved without a class")
		}
		services.Settings(root, def)
	})
}
