package registry

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/liveobjects/liveobjects/objects"
)

// SwitchService switches the service defined at rel (e.g.
// "services/mo.liveobject") on or off, the way the original distribution
// did it by hand: off, the definition moves into an XML comment and a
// null object takes its place; on, the commented definition comes back.
// The file is replaced atomically; a watching Root picks the change up.
func SwitchService(dir, rel string, on bool) error {
	file := filepath.Join(dir, filepath.FromSlash(rel))
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	def, err := objects.ParseObject(rel, bytes.NewReader(data))
	if err != nil {
		return err
	}
	var out *objects.Object
	switch {
	case on && !def.Nil, !on && def.Nil:
		return nil // already so
	case on:
		for _, n := range append(append([]*objects.Node(nil), def.Head...), def.Tail...) {
			i := strings.Index(n.Comment, "<Object")
			if n.Name != "" || i < 0 {
				continue
			}
			body := n.Comment[i:]
			if j := strings.LastIndex(body, "</Object>"); j >= 0 {
				body = body[:j+len("</Object>")]
			} else if j := strings.LastIndex(body, "/>"); j >= 0 {
				body = body[:j+2]
			}
			wrapped := `<Root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">` + body + `</Root>`
			o, err := objects.ParseObject(rel+" (commented definition)", strings.NewReader(wrapped))
			if err != nil {
				return err
			}
			out = o
			break
		}
		if out == nil {
			return fmt.Errorf("registry: %s is switched off and holds no commented definition to switch on; write the definition into the file", rel)
		}
	default:
		out = switchedOff(def)
	}
	b, err := out.MarshalFile()
	if err != nil {
		return err
	}
	return writeFileAtomic(file, b)
}
