package main

import (
	"context"
	"fmt"
	"os"

	"github.com/liveobjects/liveobjects/registry"
)

func init() {
	register(&command{
		Name:    "init",
		Args:    "[ROOT]",
		Summary: "write a fresh root folder with the default registry, services and examples",
		Help: `init writes a root folder laid out as the original distribution:

  channels/<ID>/metadata.xml      four channels (a shared text, a chat, a variable, a QSM text)
  registry/<KEY>/*.liveobject     the relay client and server, the QSM roles, the MO server
  services/*.liveobject           the relay server (on, 127.0.0.1:60000, durable); the QSM
                                  local service, QSM coordinator and MO server switched off
                                  as null objects, their definitions kept in XML comments
  examples/...                    a chat, a shared text note, a variable, a text over QSM,
                                  a composite of classes not implemented here, and a note
                                  deep in folders whose names have spaces

ROOT must not exist or be empty. Run 'liveobjects check ROOT' afterwards.
ROOT defaults to the root that 'up' uses: $LIVEOBJECTS_ROOT, else
~/.local/share/liveobjects/root.`,
		Run: func(ctx context.Context, args []string) error {
			root, err := rootArg(args)
			if err != nil {
				return err
			}
			files, err := registry.InitFiles()
			if err != nil {
				return err
			}
			if err := registry.Init(root); err != nil {
				return fmt.Errorf("%w (choose a new or empty folder)", err)
			}
			fmt.Fprintf(os.Stderr, "liveobjects init: wrote %d files to %s\n", len(files), root)
			return nil
		},
	})
}
