package registry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/liveobjects/liveobjects/objects"
)

// Problems returns every problem in the root, sorted by file and line:
// files that do not parse or have invalid content, channel folders
// without valid metadata, registry keys that hold no or several
// definitions, dangling keys and cycles in From chains, channels that are
// named but have no metadata, channels sharing an ID or a name, objects
// whose channel cannot be bound, and folders that cannot be read. Objects
// of classes this project does not implement and null objects are not
// problems.
func (r *Root) Problems() []Problem {
	r.mu.RLock()
	var out []Problem
	out = append(out, r.walkErrs...)
	for _, e := range r.entries {
		out = append(out, e.probs...)
	}
	for _, c := range r.channels {
		out = append(out, c.probs...)
	}
	out = append(out, r.resolveProblemsLocked()...)
	// What joining would find wrong (unknown classes and null objects
	// are not problems).
	for rel, e := range r.entries {
		if !e.good || e.Def == nil || e.Def.Nil {
			continue
		}
		if _, known := objects.ClassOf(e.Def); !known && e.Def.From == nil {
			continue
		}
		if _, err := r.bindingLocked(rel); err != nil && !errors.Is(err, objects.ErrUnknownClass) && !errors.Is(err, ErrSwitchedOff) {
			out = append(out, errProblem(rel, e.Def.Line, err))
		}
	}
	// Channels that share an ID or a name.
	ids, names := map[string][]string{}, map[string][]string{}
	for _, c := range r.channels {
		if c.md == nil {
			continue
		}
		ids[strings.ToUpper(c.md.ID)] = append(ids[strings.ToUpper(c.md.ID)], c.dir)
		if c.md.Name != "" {
			names[c.md.Name] = append(names[c.md.Name], c.dir)
		}
	}
	for what, m := range map[string]map[string][]string{"ID": ids, "name": names} {
		for v, dirs := range m {
			if len(dirs) < 2 {
				continue
			}
			sort.Strings(dirs)
			for _, d := range dirs[1:] {
				out = append(out, Problem{File: ChannelsDir + "/" + d + "/" + MetadataFile,
					Msg: fmt.Sprintf("channel %s %q is also used by %s/%s/", what, v, ChannelsDir, dirs[0])})
			}
		}
	}
	// Keys with several definitions.
	keys := map[string][]string{}
	for p := range r.entries {
		parts := strings.Split(p, "/")
		if len(parts) == 3 && parts[0] == RegistryDir {
			keys[parts[1]] = append(keys[parts[1]], parts[2])
		}
	}
	r.mu.RUnlock()
	for k, files := range keys {
		if len(files) > 1 {
			sort.Strings(files)
			out = append(out, Problem{File: RegistryDir + "/" + k, Msg: fmt.Sprintf("key holds %d definitions (%s); want exactly one", len(files), strings.Join(files, ", "))})
		}
		if !objects.IsHexID(k) {
			out = append(out, Problem{File: RegistryDir + "/" + k, Msg: "key is not 32 hex digits"})
		}
	}
	// Keys with none.
	if ents, err := os.ReadDir(filepath.Join(r.dir, RegistryDir)); err == nil {
		for _, d := range ents {
			if d.IsDir() && len(keys[d.Name()]) == 0 {
				out = append(out, Problem{File: RegistryDir + "/" + d.Name(), Msg: "key holds no " + Ext + " file; want exactly one"})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		if out[i].Line != out[j].Line {
			return out[i].Line < out[j].Line
		}
		return out[i].Msg < out[j].Msg
	})
	// Drop duplicates (a cycle is found from every file on it).
	dedup := out[:0]
	for i, p := range out {
		if i > 0 && p == out[i-1] {
			continue
		}
		dedup = append(dedup, p)
	}
	return dedup
}

// errProblem turns an error from resolution or binding into a Problem,
// keeping its file and line.
func errProblem(file string, line int, err error) Problem {
	var re *ResolveError
	if errors.As(err, &re) {
		return Problem{File: re.File, Line: re.Line, Msg: re.Msg}
	}
	var pe problemError
	if errors.As(err, &pe) {
		return pe.p
	}
	return Problem{File: file, Line: line, Msg: err.Error()}
}
