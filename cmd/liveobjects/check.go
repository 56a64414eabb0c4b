package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/liveobjects/liveobjects/objects"
	"github.com/liveobjects/liveobjects/registry"
)

var checkMax int

func init() {
	register(&command{
		Name:    "check",
		Args:    "[ROOT]",
		Summary: "validate every definition and channel of a root; print each problem as file:line",
		Help: `check reads every *.liveobject file below ROOT (deep folders, names with
spaces and hidden files included) and every channels/<ID>/metadata.xml, and
prints every problem as "file:line: message", sorted: XML errors, missing
ids, bad values, registry keys with no or several definitions, dangling
keys and cycles in From chains, objects whose channel cannot be bound.

Objects of classes this project does not implement are listed in the
summary but are not problems.

Exit status: 0 when there is no problem, 3 when there are problems, 1 when
ROOT cannot be read.

ROOT defaults to the root that 'up' uses: $LIVEOBJECTS_ROOT, else
~/.local/share/liveobjects/root.`,
		Flags: func(fs *flag.FlagSet) {
			fs.IntVar(&checkMax, "max", 0, "print at most this many problems (0: all)")
		},
		Run: func(ctx context.Context, args []string) error {
			root, err := rootArg(args)
			if err != nil {
				return err
			}
			return runCheck(root, os.Stdout, os.Stderr, checkMax)
		},
	})
}

// runCheck prints the problems of the root at dir to out and a summary to
// summary.
func runCheck(dir string, out, summary io.Writer, maxProblems int) error {
	if err := checkRootFolder(dir); err != nil {
		return err
	}
	if root, err := getxattr(dir, registry.MountRootAttr); err == nil && root != "" {
		// A mount: check the root it shows (reading its live files would
		// join every object).
		fmt.Fprintf(summary, "%s is a mount of %s; checking that root\n", dir, root)
		dir = root
	}
	r, err := registry.Open(dir)
	if err != nil {
		return err
	}
	defer r.Close()
	probs := r.Problems()
	for i, p := range probs {
		if maxProblems > 0 && i >= maxProblems {
			fmt.Fprintf(out, "... and %d more\n", len(probs)-i)
			break
		}
		fmt.Fprintln(out, p.String())
	}
	objs := r.Objects()
	unknown, null := 0, 0
	for _, e := range objs {
		if e.Def == nil {
			continue
		}
		if e.Def.Nil {
			null++
			continue
		}
		if _, known := objects.ClassOf(e.Def); !known && e.Def.From == nil {
			unknown++
		}
	}
	fmt.Fprintf(summary, "%s (%d of classes not implemented here, %d switched off), %s, %s\n",
		count(len(objs), "definition"), unknown, null, count(len(r.Channels()), "channel"), count(len(probs), "problem"))
	if len(probs) > 0 {
		return exitError{exitProblems, fmt.Errorf("%s in %s", count(len(probs), "problem"), dir)}
	}
	return nil
}

// count returns n and noun, in the plural unless n is 1.
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
