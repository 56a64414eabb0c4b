package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/liveobjects/liveobjects/registry"
)

func init() {
	for _, on := range []bool{true, false} {
		word := map[bool]string{true: "on", false: "off"}[on]
		register(&command{
			Name:    "service " + word,
			Args:    "[ROOT] NAME",
			Summary: "switch a service of a root " + word + " (NAME: a file in ROOT/services, e.g. mo or quicksilver_localservice)",
			Help: `Off, the service's definition moves into an XML comment and a null object
takes its place, as in the original distribution; on, it comes back. A daemon
hosting the root ('liveobjects up') starts or stops the service within a second.

ROOT defaults to the root that 'up' uses: $LIVEOBJECTS_ROOT, else
~/.local/share/liveobjects/root.`,
			Run: func(ctx context.Context, args []string) error {
				switch len(args) {
				case 1:
					args = []string{defaultRoot(), args[0]}
				case 2:
				default:
					return usagef("want NAME, or ROOT and NAME")
				}
				root := args[0]
				if err := checkRootFolder(root); err != nil {
					return err
				}
				name := strings.TrimSuffix(filepath.Base(args[1]), registry.Ext)
				rel := registry.ServicesDir + "/" + name + registry.Ext
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(rel))); errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("%s has no service %q (no file %s); its services: %s", root, name, rel, serviceNames(root))
				}
				if err := registry.SwitchService(root, rel, on); err != nil {
					return err
				}
				fmt.Printf("%s: %s\n", rel, word)
				return nil
			},
		})
	}
}

// checkRootFolder says what is wrong when dir is not a folder that could
// be a root.
func checkRootFolder(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("root folder %s does not exist; create one with 'liveobjects init %s'", dir, dir)
	case err != nil:
		return fmt.Errorf("root folder: %w", err)
	case !st.IsDir():
		return fmt.Errorf("root %s is a file, not a folder: name a root folder (create one with 'liveobjects init DIR')", dir)
	}
	return nil
}

// serviceNames lists the services of the root at dir, for messages.
func serviceNames(dir string) string {
	ents, _ := os.ReadDir(filepath.Join(dir, registry.ServicesDir))
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), registry.Ext); ok && !e.IsDir() {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none (the root has no services/ folder)"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
