package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/registry"
)

var showRoot string

func init() {
	register(&command{
		Name:    "show",
		Args:    "PATH",
		Summary: "show an object's definition, type and resolution chain",
		Help: `show prints what a definition file is: its name, class and distributed
type (interface, category, required reliability, security), the channel it
runs over and the communication driver that carries it, whether joining
would work, the resolution chain of its From references through the
registry, and the definition itself as this project reads it.

PATH is a .liveobject file or a channels/<ID>/metadata.xml file in a root.
The root is found by walking up from PATH to the first folder that has a
registry/ or channels/ folder, unless --root is given.

Exit status: 0, 3 when the file has problems, 1 when it cannot be found.`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&showRoot, "root", "", "the root folder (default: found by walking up from PATH)")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 1 {
				return usagef("want one argument, the path of a .liveobject or metadata.xml file")
			}
			return runShow(args[0], showRoot, os.Stdout)
		},
	})
}

// findRoot walks up from the folder of p to the first folder holding a
// registry/ or channels/ folder; it returns the folder of p if none does.
func findRoot(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return filepath.Dir(p)
	}
	start := filepath.Dir(abs)
	for d := start; ; d = filepath.Dir(d) {
		for _, sub := range []string{registry.RegistryDir, registry.ChannelsDir} {
			if st, err := os.Stat(filepath.Join(d, sub)); err == nil && st.IsDir() {
				return d
			}
		}
		if filepath.Dir(d) == d {
			return start
		}
	}
}

func runShow(p, root string, w io.Writer) error {
	abs, err := filepath.Abs(p)
	if err != nil {
		return err
	}
	if st, err := os.Stat(abs); err != nil {
		return fmt.Errorf("%w (give the path of a .liveobject or metadata.xml file)", err)
	} else if st.IsDir() {
		return fmt.Errorf("%s is a folder; give the path of a .liveobject or metadata.xml file", p)
	}
	if mroot, rel, ok := onMount(abs); ok {
		// A file of a mount: show its definition on disk; reading the
		// live file would join the object.
		abs, root = filepath.Join(mroot, filepath.FromSlash(rel)), mroot
	}
	if root == "" {
		root = findRoot(abs)
	} else if err := checkRootFolder(root); err != nil {
		return fmt.Errorf("--root: %w", err)
	}
	r, err := registry.Open(root)
	if err != nil {
		return err
	}
	defer r.Close()
	rel, ok := r.Rel(filepath.Clean(abs))
	if !ok {
		return fmt.Errorf("%s is not below the root %s (name the root it belongs to with --root)", p, r.Dir())
	}
	if strings.HasSuffix(rel, "/"+registry.MetadataFile) && strings.HasPrefix(rel, registry.ChannelsDir+"/") {
		return showChannel(r, rel, w)
	}
	e, ok := r.Lookup(rel)
	if !ok {
		return fmt.Errorf("%s is not a definition of the root %s (definitions end in %s)", rel, r.Dir(), registry.Ext)
	}
	fmt.Fprintf(w, "path: %s\n", e.Path)
	def := e.Def
	if def != nil && !def.Nil {
		if n := def.Name(); n != "" {
			fmt.Fprintf(w, "name: %s\n", n)
		}
		if c := def.Comment(); c != "" {
			fmt.Fprintf(w, "comment: %s\n", c)
		}
	}
	b, berr := r.Binding(rel)
	switch {
	case def == nil:
	case def.Nil:
		fmt.Fprintf(w, "class: none (a null object: switched off)\n")
	case def.From != nil && b.Class.ID == "":
		fmt.Fprintf(w, "class: none (%s taken from a dictionary)\n", def.ID)
	case def.From != nil:
		fmt.Fprintf(w, "class: %s %s (%s taken from a dictionary)\n", b.Class.Name, b.Class.ID, def.ID)
		fmt.Fprintf(w, "type: %s\n", b.Type)
	case b.Class.Category == objects.CategoryUnknown:
		fmt.Fprintf(w, "class: %s (not implemented by liveobjects)\n", b.Class.ID)
		fmt.Fprintf(w, "type: unknown\n")
	default:
		fmt.Fprintf(w, "class: %s %s\n", b.Class.Name, b.Class.ID)
		fmt.Fprintf(w, "type: %s\n", b.Type)
	}
	if b.Driver != "" {
		fmt.Fprintf(w, "channel: %s (%s)\n", b.ChannelName, b.ChannelID)
		var params []string
		for k, v := range b.DriverParams {
			params = append(params, k+"="+v)
		}
		sort.Strings(params)
		fmt.Fprintf(w, "driver: %s (%s)\n", b.Driver, strings.Join(params, ", "))
		if b.Class.Category == objects.CategoryStream {
			fmt.Fprintf(w, "history: %d\n", b.History)
		}
	}
	switch {
	case def == nil || def.Nil:
		if def != nil {
			fmt.Fprintf(w, "join: nothing to join (switched off)\n")
		}
	case berr != nil:
		fmt.Fprintf(w, "join: fails: %v\n", berr)
	case b.Driver == "":
		fmt.Fprintf(w, "join: nothing to join (a %s object runs over no channel)\n", b.Class.Category)
	default:
		provides, _ := objects.DriverProvides(b.Driver)
		name := strings.TrimSuffix(path.Base(rel), registry.Ext)
		if err := b.Type.CheckDriver(name, b.ChannelName, b.Driver, provides); err != nil {
			fmt.Fprintf(w, "join: fails: %v\n", err)
		} else {
			fmt.Fprintf(w, "join: ok: %s provides %s\n", b.Driver, objects.Strongest(provides))
		}
	}
	if e.Err != nil {
		fmt.Fprintf(w, "problem: %v\n", e.Err)
		for _, pr := range r.Problems() {
			if pr.File == rel && pr.String() != e.Err.Error() {
				fmt.Fprintf(w, "problem: %s\n", pr)
			}
		}
	}
	if len(b.Chain) > 0 {
		fmt.Fprintf(w, "resolution:\n")
		for _, s := range b.Chain {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	if def != nil {
		data, err := def.MarshalFile()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "definition:\n%s", data)
	}
	if e.Err != nil {
		return exitError{exitProblems, errors.New("the definition has problems")}
	}
	return nil
}

func showChannel(r *registry.Root, rel string, w io.Writer) error {
	dir := strings.Split(rel, "/")[1]
	md, ok := r.Channel(dir)
	fmt.Fprintf(w, "path: %s\n", rel)
	var probs []registry.Problem
	for _, p := range r.Problems() {
		if p.File == rel || p.File == registry.ChannelsDir+"/"+dir {
			probs = append(probs, p)
		}
	}
	if ok {
		fmt.Fprintf(w, "channel: %s (%s)\n", md.DisplayName(), md.ID)
		if md.Comment != "" {
			fmt.Fprintf(w, "comment: %s\n", md.Comment)
		}
		cls := "unknown class " + md.MessageClass
		if c, known := objects.LookupClass(md.MessageClass); known {
			cls = c.Name + " " + c.ID
		}
		fmt.Fprintf(w, "message class: %s\n", cls)
		if md.CheckpointClass != md.MessageClass {
			fmt.Fprintf(w, "checkpoint class: %s\n", md.CheckpointClass)
		}
		var users []string
		for _, e := range r.Objects() {
			if b, err := r.Binding(e.Path); err == nil && strings.EqualFold(b.ChannelID, md.ID) {
				users = append(users, fmt.Sprintf("%s (%s over %s)", e.Path, b.Class.Name, b.Driver))
			}
		}
		for _, u := range users {
			fmt.Fprintf(w, "used by: %s\n", u)
		}
	}
	for _, p := range probs {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	if ok {
		data, err := md.Marshal()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "definition:\n%s", data)
	}
	if len(probs) > 0 {
		return exitError{exitProblems, errors.New("the channel has problems")}
	}
	return nil
}

// onMount reports whether p is a file of a liveobjects mount, and if so
// the root folder the mount shows and p's definition relative to it.
func onMount(p string) (root, rel string, ok bool) {
	rel, err := getxattr(p, "user.liveobject.path")
	if err != nil || rel == "" {
		return "", "", false
	}
	for d := filepath.Dir(p); ; d = filepath.Dir(d) {
		if r, err := getxattr(d, registry.MountRootAttr); err == nil && r != "" {
			return r, rel, true
		}
		if filepath.Dir(d) == d {
			return "", "", false
		}
	}
}
