package main

import (
	"context"
	"fmt"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func init() {
	register(&command{
		Name:    "version",
		Summary: "print the version",
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 0 {
				return usagef("takes no arguments")
			}
			v := version
			if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" && len(s.Value) >= 12 {
						v = "dev-" + s.Value[:12]
					}
				}
				fmt.Printf("liveobjects %s (%s)\n", v, bi.GoVersion)
				return nil
			}
			fmt.Printf("liveobjects %s\n", v)
			return nil
		},
	})
}
