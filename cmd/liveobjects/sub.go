package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
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
events. When the relay lost its history (a relay without a durable log
restarted), the channel starts again from the relay's current state and
sequence numbers begin again; this too is reported on stderr. When the
membership ends (the channel was removed on the relay, or the relay
refused to let sub back in after a reconnection) sub says why on stderr
and exits with status 1.

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
	// deliver appends to pending; one writer goroutine writes whatever has
	// piled up with one system call, so a fast stream is written in large
	// batches and a slow one line by line, without a timer.
	var (
		mu      sync.Mutex // protects everything below
		pending []byte
		n       int
		last    uint64
		epoch   uint64 // the relay's epoch at the last Restore
		joined  bool
		werr    error
		stopped bool
		kick    = make(chan struct{}, 1)
	)
	wake := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		var buf []byte
		for {
			select {
			case <-kick:
			case <-ctx.Done():
			}
			mu.Lock()
			buf, pending = pending, buf[:0]
			done := ctx.Err() != nil
			mu.Unlock()
			if len(buf) > 0 {
				if _, err := os.Stdout.Write(buf); err != nil {
					mu.Lock()
					if werr == nil {
						werr = err
					}
					mu.Unlock()
					cancel()
					return
				}
			}
			if done {
				mu.Lock()
				rest := pending
				mu.Unlock()
				os.Stdout.Write(rest)
				return
			}
		}
	}()
	h := &scriptHandler{
		deliver: func(ev transport.Event) {
			mu.Lock()
			defer mu.Unlock()
			if stopped {
				return
			}
			last = ev.Seq
			if o.printSeq {
				pending = strconv.AppendUint(pending, ev.Seq, 10)
				pending = append(pending, '\t')
			}
			pending = append(pending, ev.Data...)
			pending = append(pending, '\n')
			wake()
			n++
			if o.count > 0 && n >= o.count {
				stopped = true
				cancel()
			}
		},
		restore: func(cp []byte, seq uint64) {
			// The client installs a connection before the states it
			// brings are restored, so a new epoch is seen here at the
			// latest with the first state of the new history.
			ep := c.Epoch()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case joined && ep != epoch:
				fmt.Fprintf(os.Stderr, "liveobjects sub: the relay lost its history (its epoch changed, as when a relay without a durable log restarts): channel %s starts again from the relay's state at event %d, and sequence numbers begin again (the last event before was %d)\n", channel, seq, last)
			case joined && seq > last:
				fmt.Fprintf(os.Stderr, "liveobjects sub: fell behind; skipped to the state after event %d (%d events not printed)\n", seq, seq-last)
			}
			epoch = ep
			if !joined && o.printState && len(cp) > 0 {
				pending = append(pending, cp...)
				if cp[len(cp)-1] != '\n' {
					pending = append(pending, '\n')
				}
				wake()
			}
			joined = true
			last = seq
		},
	}
	m, err := c.JoinMember(ctx, channel, h)
	if err != nil {
		return o.joinError(channel, err)
	}
	var ended error // why the membership ended, if it did before ctx
	select {
	case <-ctx.Done():
	case <-m.Done():
		ended = m.Err()
		cancel() // the writer prints what is pending and returns
	}
	m.Leave()
	<-writerDone
	mu.Lock()
	defer mu.Unlock()
	if werr != nil {
		return fmt.Errorf("write stdout: %w", werr)
	}
	if ended != nil {
		return membershipEnded(channel, ended)
	}
	return nil
}
