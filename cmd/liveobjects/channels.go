package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
)

var channelsOpts struct {
	relayClientFlags
	json bool
}

func init() {
	register(&command{
		Name:    "channels",
		Args:    "",
		Summary: "list the relay's channels with their members and last sequence numbers",
		Help: `Asks the relay for its channels and prints one line per channel: name, ID,
number of joined members, last sequence number and comment. --json prints
a JSON array instead.`,
		Flags: func(fs *flag.FlagSet) {
			channelsOpts.relayClientFlags.register(fs)
			fs.BoolVar(&channelsOpts.json, "json", false, "print JSON")
		},
		Run: runChannels,
	})
}

func runChannels(ctx context.Context, args []string) error {
	if len(args) != 0 {
		return usagef("unexpected arguments %q", args)
	}
	c, err := channelsOpts.dial(ctx, "")
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.Channels(ctx)
	if err != nil {
		return err
	}
	if channelsOpts.json {
		type entry struct {
			Name    string `json:"name"`
			ID      string `json:"id,omitempty"`
			Comment string `json:"comment,omitempty"`
			Members int    `json:"members"`
			LastSeq uint64 `json:"last_seq"`
		}
		out := make([]entry, 0, len(list))
		for _, ch := range list {
			out = append(out, entry{ch.Name, ch.ID, ch.Comment, ch.Members, ch.LastSeq})
		}
		return printJSON(out)
	}
	tw := newTable()
	fmt.Fprintln(tw, "NAME\tID\tMEMBERS\tLAST-SEQ\tCOMMENT")
	for _, ch := range list {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", ch.Name, ch.ID, ch.Members, ch.LastSeq, ch.Comment)
	}
	return tw.Flush()
}

// printJSON writes v to stdout as indented JSON (the --json output of the
// listing commands).
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns a writer that aligns tab-separated columns on stdout
// (the listing commands' tables); Flush it at the end.
func newTable() *tabwriter.Writer { return tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0) }
