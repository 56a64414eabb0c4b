package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"sync"

	"github.com/liveobjects/liveobjects/transport"
)

var subOpts struct {
	relayClientFlags
	printSeq   bool
	printState bool
	count      int
}

func init() {
	register(&command{
		Name:    "sub",
		Args:    "CHANNEL",
		Summary: "print the events of a relay channel as they come",
		Help: `Joins CHANNEL at the relay and prints every event's data as one line, as
it arrives, until interrupted (or --count events were printed). With --seq
each line starts with the event's sequence number and a tab. With --state
the channel's state (the checkpoint received on joining) is printed first,
raw. When the output cannot keep up the relay catches the subscriber up by
state transfer; this is reported on stderr with the number of skipped
events.

Example:
  liveobjects sub chat --seq`,
		Flags: func(fs *flag.FlagSet) {
			subOpts.relayClientFlags.register(fs)
			fs.BoolVar(&subOpts.printSeq, "seq", false, "prefix each line with the sequence number and a tab")
			fs.BoolVar(&subOpts.printState, "state", false, "print the channel's state first")
			fs.IntVar(&subOpts.count, "count", 0, "exit after this many events (0: run until interrupted)")
		},
		Run: runSub,
	})
}

func runSub(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usagef("want exactly one CHANNEL")
	}
	o := &subOpts
	channel := args[0]
	c, err := o.dial(ctx, channel)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		out     = bufio.NewWriterSize(os.Stdout, 64<<10)
		n       int
		last    uint64
		joined  bool
		werr    error
		stopped bool
	)
	h := &scriptHandler{
		deliver: func(ev transport.Event) {
			mu.Lock()
			defer mu.Unlock()
			if stopped {
				return
			}
			last = ev.Seq
			if o.printSeq {
				fmt.Fprintf(out, "%d\t", ev.Seq)
			}
			out.Write(ev.Data)
			out.WriteByte('\n')
			if err := out.Flush(); err != nil && werr == nil {
				werr = err
				cancel()
			}
			n++
			if o.count > 0 && n >= o.count {
				stopped = true
				cancel()
			}
		},
		restore: func(cp []byte, seq uint64) {
			mu.Lock()
			defer mu.Unlock()
			if joined && seq > last {
				fmt.Fprintf(os.Stderr, "liveobjects sub: fell behind; skipped to the state after event %d (%d events not printed)\n", seq, seq-last)
			}
			if !joined && o.printState && len(cp) > 0 {
				out.Write(cp)
				if cp[len(cp)-1] != '\n' {
					out.WriteByte('\n')
				}
				out.Flush()
			}
			joined = true
			last = seq
		},
	}
	m, err := c.Join(ctx, channel, h)
	if err != nil {
		return err
	}
	<-ctx.Done()
	m.Leave()
	mu.Lock()
	defer mu.Unlock()
	if werr != nil {
		return fmt.Errorf("write stdout: %w", werr)
	}
	return nil
}
