package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/liveobjects/liveobjects/registry"
)

func init() {
	for _, on := range []bool{true, false} {
		word := map[bool]string{true: "on", false: "off"}[on]
		register(&command{
			Name:    "service " + word,
			Args:    "ROOT NAME",
			Summary: "switch a service of a root " + word + " (NAME: a file in ROOT/services, e.g. mo or quicksilver_localservice)",
			Help: `Off, the service's definition moves into an XML comment and a null object
takes its place, as in the original distribution; on, it comes back. A daemon
hosting the root ('liveobjects up') starts or stops the service within a second.`,
			Run: func(ctx context.Context, args []string) error {
				if len(args) != 2 {
					return usagef("want ROOT and NAME")
				}
				name := strings.TrimSuffix(filepath.Base(args[1]), ".liveobject")
				rel := "services/" + name + ".liveobject"
				if err := registry.SwitchService(args[0], rel, on); err != nil {
					return err
				}
				fmt.Printf("%s: %s\n", rel, word)
				return nil
			},
		})
	}
}
