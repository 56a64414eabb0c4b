package registry

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/liveobjects/liveobjects/objects"
)

// largeRoot is what genLargeRoot wrote.
type largeRoot struct {
	files       []string        // every .liveobject file
	broken      map[string]bool // files with a problem of their own
	dupKeys     []string        // registry keys with two definitions
	channelDirs int
}

// genLargeRoot writes a root laid out like the original distribution's
// installation folder: hundreds of files, deep folders, spaces in names,
// hidden .default files, UTF-16 files, many classes this project does not
// implement, composites, and some broken files.
func genLargeRoot(t testing.TB, dir string, n int) largeRoot {
	t.Helper()
	if err := Init(dir); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	lr := largeRoot{broken: map[string]bool{}}
	var channels []string
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("%032X", 0x1000+i)
		md := objects.Metadata{ID: id, Name: fmt.Sprintf("chan %d", i), MessageClass: objects.ClassText, CheckpointClass: objects.ClassText}
		data, _ := md.Marshal()
		writeFile(t, dir, "channels/"+id+"/metadata.xml", string(data))
		channels = append(channels, id)
	}
	// Registry keys of components this project does not implement.
	var keys []string
	for i := 0; i < 60; i++ {
		k := fmt.Sprintf("%08X%024X", rng.Uint32(), i)
		keys = append(keys, k)
		writeFile(t, dir, "registry/"+k+"/component_"+fmt.Sprint(i)+".liveobject", unknownXML(rng, k, i))
		if i%25 == 7 {
			writeFile(t, dir, "registry/"+k+"/copy of component.liveobject", unknownXML(rng, k, i))
			lr.dupKeys = append(lr.dupKeys, k)
		}
	}
	words := []string{"Live Objects", "examples", "My Folder", "a b c", "x", "Projects 2010", "nested", "deep er", ".hidden dir", "QuickSilver"}
	known := []string{objects.ClassStream, objects.ClassText, objects.ClassVariable}
	for i := 0; i < n; i++ {
		depth := rng.Intn(9)
		var parts []string
		for d := 0; d < depth; d++ {
			parts = append(parts, words[rng.Intn(len(words))])
		}
		base := fmt.Sprintf("object %d", i)
		switch {
		case i%17 == 0:
			base = ".default." + base
		case i%5 == 0:
			base = "Object_With Many  Spaces " + fmt.Sprint(i)
		}
		rel := "examples/" + strings.Join(append(parts, base+".liveobject"), "/")
		var content string
		switch i % 4 {
		case 0: // a class this project implements, over a relay channel
			content = objectXML(known[rng.Intn(len(known))], base, channels[rng.Intn(len(channels))])
		case 1, 2: // classes it does not implement, some referring to the registry
			content = unknownXML(rng, keys[rng.Intn(len(keys))], i)
		case 3: // a composite of unknown components
			content = compositeXML(rng, keys, i)
		}
		if i%23 == 11 { // broken: truncated
			content = content[:len(content)/2]
			lr.broken[rel] = true
		}
		if i%31 == 3 && !lr.broken[rel] { // UTF-16, as the original wrote
			u := utf16.Encode([]rune(content))
			b := []byte{0xFF, 0xFE}
			for _, c := range u {
				b = append(b, byte(c), byte(c>>8))
			}
			content = string(b)
		}
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(rel))); err == nil {
			continue // the same random path twice
		}
		writeFile(t, dir, rel, content)
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".liveobject") {
			rel, _ := filepath.Rel(dir, p)
			lr.files = append(lr.files, filepath.ToSlash(rel))
		}
		if err == nil && d.IsDir() && filepath.Base(filepath.Dir(p)) == "channels" {
			lr.channelDirs++
		}
		return nil
	})
	return lr
}

func unknownXML(rng *rand.Rand, key string, i int) string {
	cls := fmt.Sprintf("%016X%016X", rng.Uint64(), rng.Uint64())
	if i%3 == 0 {
		cls = "0`1:" + cls + "`" + fmt.Sprint(i%5)
	}
	return head + `  <Object xsi:type="ReferenceObject" id="` + cls + `">
    <Attribute id="9F4C608A9A6D44FFAD8A2FDC662E185B" value="Component ` + fmt.Sprint(i) + `" />
    <Parameter id="rate">
      <Value xsi:type="xsd:int">` + fmt.Sprint(rng.Intn(1000)) + `</Value>
    </Parameter>
    <Parameter id="factory">
      <Value xsi:type="ReferenceObject" id="` + key + `">
        <From xsi:type="ReferenceObject" id="608016D5CCC2FA255099DC735C73A495" />
      </Value>
    </Parameter>
    <Parameter id="configuration">
      <Value xsi:type="Configuration">
        <Parameter name="setting" value="` + fmt.Sprint(i) + `" />
      </Value>
    </Parameter>
  </Object>
</Root>
`
}

func compositeXML(rng *rand.Rand, keys []string, i int) string {
	return head + fmt.Sprintf(`  <Object xsi:type="CompositeObject" id="%016X%016X">
    <Attribute id="9F4C608A9A6D44FFAD8A2FDC662E185B" value="Composite %d" />
    <ObjectClass id="%016X%016X">
      <EndpointConstraint name="ui" kind="Dual" class="4BD58FAE1AEB4537B42CE0C2640528F9" value="x" />
    </ObjectClass>
    <Component id="a">
      <Object xsi:type="ReferenceObject" id="%s">
        <From xsi:type="ReferenceObject" id="608016D5CCC2FA255099DC735C73A495" />
      </Object>
    </Component>
    <Component id="b">
      <Object xsi:type="ReferenceObject" id="%016X%016X" />
    </Component>
    <Endpoint id="out" from="a.out" />
    <Connection from="a.out" to="b.in" />
  </Object>
</Root>
`, rng.Uint64(), rng.Uint64(), i, rng.Uint64(), rng.Uint64(), keys[rng.Intn(len(keys))], rng.Uint64(), rng.Uint64())
}

// TestLargeRoot checks a root like the original distribution's, with
// hundreds of files: every file is listed, exactly the broken ones and
// the doubled keys are reported, and binding every object works or fails
// with a clear error.
func TestLargeRoot(t *testing.T) {
	dir := t.TempDir()
	lr := genLargeRoot(t, dir, 600)
	if len(lr.files) < 500 {
		t.Fatalf("generated only %d files", len(lr.files))
	}
	start := time.Now()
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	probs := r.Problems()
	t.Logf("%d files, %d problems, open+check in %v", len(lr.files), len(probs), time.Since(start))
	if got := len(r.Objects()); got != len(lr.files) {
		t.Errorf("%d objects listed, %d files", got, len(lr.files))
	}
	if got := len(r.Channels()); got != lr.channelDirs {
		t.Errorf("%d channels, %d folders", got, lr.channelDirs)
	}
	byFile := map[string]bool{}
	for _, p := range probs {
		byFile[p.File] = true
	}
	for f := range lr.broken {
		if !byFile[f] {
			t.Errorf("broken %s not reported", f)
		}
	}
	for _, k := range lr.dupKeys {
		if !byFile["registry/"+k] {
			t.Errorf("doubled key %s not reported", k)
		}
	}
	for f := range byFile {
		if !lr.broken[f] && !strings.HasPrefix(f, "registry/") {
			t.Errorf("unexpected problem in %s", f)
		}
	}
	if len(probs) != len(lr.broken)+len(lr.dupKeys) {
		t.Errorf("%d problems, want %d:\n%v", len(probs), len(lr.broken)+len(lr.dupKeys), probs)
	}
	unknown := 0
	for _, e := range r.Objects() {
		b, err := r.Binding(e.Path)
		switch {
		case err == nil:
			if b.Class.Category != objects.CategoryService && b.Class.Category != objects.CategoryFolder && b.Class.Category != objects.CategoryChannel && b.Driver == "" {
				t.Errorf("%s: bound without a driver: %+v", e.Path, b)
			}
		case errors.Is(err, objects.ErrUnknownClass):
			if strings.HasPrefix(e.Path, "examples/") {
				unknown++
			}
		case errors.Is(err, ErrSwitchedOff), lr.broken[e.Path]:
		default:
			t.Errorf("%s: %v", e.Path, err)
		}
	}
	if unknown < 300 {
		t.Errorf("only %d objects of unknown classes", unknown)
	}
}
