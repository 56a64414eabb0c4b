package registry

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// checkFor polls f every step until it returns nil or wait has passed,
// then fails the test with f's last error.
func checkFor(t testing.TB, wait, step time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", wait, err)
		}
		time.Sleep(step)
	}
}

// writeFile writes a file below dir, creating folders.
func writeFile(t testing.TB, dir, rel, content string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// openInit writes a fresh root into a temporary folder and opens it.
func openInit(t testing.TB) (*Root, string) {
	t.Helper()
	dir := t.TempDir()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, dir
}

const head = `<?xml version="1.0" encoding="utf-8"?>
<Root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
`

// objectXML is a definition of class id with a display name, over channel
// ch of the relay (no channel when ch is "").
func objectXML(id, name, ch string) string {
	s := head + `  <Object xsi:type="ReferenceObject" id="` + id + `">
    <Attribute id="9F4C608A9A6D44FFAD8A2FDC662E185B" value="` + name + `" />
`
	if ch != "" {
		s += `    <Parameter id="channel">
      <Value xsi:type="ReferenceObject" id="` + ch + `">
        <From xsi:type="ReferenceObject" id="011E83FA6A9F426993BB8EF26FF7D7B8" />
      </Value>
    </Parameter>
`
	}
	return s + "  </Object>\n</Root>\n"
}
