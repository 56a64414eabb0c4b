package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/relay"
)

// relayClientFlags are the connection flags shared by pub, sub and channels.
type relayClientFlags struct {
	addr, token, secretEnv string
	tlsCA, tlsCert, tlsKey string
	tlsServerName          string
}

func (o *relayClientFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("LIVEOBJECTS_RELAY")
	if def == "" {
		def = "127.0.0.1:60000"
	}
	fs.StringVar(&o.addr, "relay", def, "relay address (default from LIVEOBJECTS_RELAY)")
	fs.StringVar(&o.token, "token", "", "the channel's token, if the relay wants one")
	fs.StringVar(&o.secretEnv, "secret-env", "LIVEOBJECTS_RELAY_SECRET", "environment variable holding the relay's shared secret")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "CA file (PEM) for the relay's certificate; enables TLS")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "client certificate file (PEM), when the relay wants one")
	fs.StringVar(&o.tlsKey, "tls-key", "", "client key file (PEM)")
	fs.StringVar(&o.tlsServerName, "tls-server-name", "", "name to verify in the relay's certificate (default: the host of --relay)")
}

// check refuses flag combinations that would otherwise be ignored.
func (o *relayClientFlags) check() error {
	switch {
	case o.tlsKey != "" && o.tlsCert == "":
		return usagef("--tls-key needs --tls-cert (the client certificate that goes with the key)")
	case o.tlsCert != "" && o.tlsKey == "":
		return usagef("--tls-cert needs --tls-key (the key of the client certificate)")
	case o.tlsServerName != "" && o.tlsCA == "" && o.tlsCert == "":
		return usagef("--tls-server-name needs TLS: give the CA of the relay's certificate with --tls-ca")
	}
	return nil
}

// dial connects to the relay; channel, if set, gets the token.
func (o *relayClientFlags) dial(ctx context.Context, channel string) (*relay.Client, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	cfg := relay.ClientConfig{Addr: normalizeAddr(o.addr, ""), Logger: slog.Default()}
	if o.secretEnv != "" {
		cfg.Secret = os.Getenv(o.secretEnv)
	}
	if o.token != "" && channel != "" {
		cfg.Tokens = map[string]string{channel: o.token}
	}
	if o.tlsCA != "" || o.tlsCert != "" {
		tc := &tls.Config{ServerName: o.tlsServerName, MinVersion: tls.VersionTLS12}
		if o.tlsCA != "" {
			pool, err := loadPool(o.tlsCA)
			if err != nil {
				return nil, err
			}
			tc.RootCAs = pool
		}
		if o.tlsCert != "" {
			pair, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
			if err != nil {
				return nil, fmt.Errorf("load client key pair: %w", err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		cfg.TLS = tc
	}
	c, err := relay.Dial(ctx, cfg)
	if err != nil {
		var re *relay.Error
		switch {
		case errors.Is(err, transport.ErrDenied):
			return nil, fmt.Errorf("%w (%s)", err, o.secretHint(cfg.Secret))
		case errors.As(err, &re), ctx.Err() != nil:
			return nil, err // the relay said what is wrong, or the caller gave up
		}
		return nil, fmt.Errorf("%w (is the relay running at %s? start one with 'liveobjects relay')", err, cfg.Addr)
	}
	return c, nil
}

// secretHint says how to give the relay's shared secret, after the relay
// refused the one sent (or its absence).
func (o *relayClientFlags) secretHint(sent string) string {
	switch {
	case o.secretEnv == "":
		return "no secret was sent, as --secret-env is empty: name the environment variable that holds the relay's shared secret"
	case sent == "":
		return fmt.Sprintf("no secret was sent: put the relay's shared secret in $%s, or name another variable with --secret-env", o.secretEnv)
	}
	return fmt.Sprintf("the secret in $%s is not the relay's: put the relay's shared secret there, or name another variable with --secret-env", o.secretEnv)
}

// joinError adds to a refused join of channel how to get in.
func (o *relayClientFlags) joinError(channel string, err error) error {
	if !errors.Is(err, transport.ErrDenied) {
		return err
	}
	orSecret := ", or the relay's shared secret in the variable named by --secret-env"
	if o.secretEnv != "" {
		orSecret = fmt.Sprintf(", or the relay's shared secret in $%s", o.secretEnv)
	}
	if o.token != "" {
		return fmt.Errorf("%w (check the token given with --token for channel %s%s)", err, channel, orSecret)
	}
	return fmt.Errorf("%w (give channel %s's token with --token%s)", err, channel, orSecret)
}

// membershipEnded describes why a membership of channel ended while the
// command ran (from Member.Err).
func membershipEnded(channel string, err error) error {
	var re *relay.Error
	if errors.As(err, &re) && re.Code == relay.CodeRemoved {
		return fmt.Errorf("channel %s was removed on the relay", channel)
	}
	return fmt.Errorf("membership of channel %s ended: %w", channel, err)
}

// scriptHandler is the Handler of pub and sub: it holds no object state,
// so it never offers checkpoints (the relay asks a real replica instead).
type scriptHandler struct {
	deliver func(transport.Event)
	restore func(cp []byte, seq uint64)
}

func (h *scriptHandler) Deliver(ev transport.Event) {
	if h.deliver != nil {
		h.deliver(ev)
	}
}

func (h *scriptHandler) Checkpoint() ([]byte, error) {
	return nil, errors.New("a script client holds no object state")
}

func (h *scriptHandler) Restore(cp []byte, seq uint64) error {
	if h.restore != nil {
		h.restore(cp, seq)
	}
	return nil
}

var pubOpts struct {
	relayClientFlags
	printSeq bool
}

func init() {
	register(&command{
		Name:    "pub",
		Args:    "CHANNEL",
		Summary: "publish each line of stdin as one event on a relay channel",
		Help: `Joins CHANNEL at the relay and publishes every line read from stdin as
one event (without its newline). Publishing is pipelined; the command
exits once the relay has acknowledged every line (they are then in the
channel's order, and on disk when the relay is durable). With --seq each
line's sequence number is printed, in input order.

A line longer than the relay's largest event (relay --max-event, which the
relay announces when pub connects) stops the command with an error; the
lines before it are published. Interrupted (SIGINT, SIGTERM), or when its
channel is removed on the relay, pub stops at once, says on stderr how
many lines the relay acknowledged (with --seq it prints their numbers) and
exits with status 1.

Example:
  printf 'hello\nworld\n' | liveobjects pub chat`,
		Flags: func(fs *flag.FlagSet) {
			pubOpts.relayClientFlags.register(fs)
			fs.BoolVar(&pubOpts.printSeq, "seq", false, "print each event's sequence number")
		},
		Run: runPub,
	})
}

func runPub(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usagef("want exactly one CHANNEL")
	}
	return pubLines(ctx, &pubOpts.relayClientFlags, args[0], os.Stdin, os.Stdout, pubOpts.printSeq)
}

// pubTally counts the lines of one pub run. The publish callbacks update
// it from the relay client's reader goroutine.
type pubTally struct {
	mu       sync.Mutex // protects the fields below
	sent     int        // lines handed to PublishAsync
	finished int        // of those, acknowledged or failed
	acked    int
	firstErr error
	printSeq bool
	seqs     []uint64 // with --seq: each sent line's number (0 until acknowledged)

	kick chan struct{} // capacity 1: a publish finished
}

// publish sends line number lineNo without waiting for its acknowledgement.
func (t *pubTally) publish(ctx context.Context, m *relay.Member, lineNo int, data []byte) error {
	t.mu.Lock()
	t.sent++
	i := -1
	if t.printSeq {
		i = len(t.seqs)
		t.seqs = append(t.seqs, 0)
	}
	t.mu.Unlock()
	err := m.PublishAsync(ctx, data, func(seq uint64, err error) {
		t.mu.Lock()
		t.finished++
		switch {
		case err != nil:
			if t.firstErr == nil {
				t.firstErr = fmt.Errorf("line %d: %w", lineNo, err)
			}
		default:
			t.acked++
			if i >= 0 {
				t.seqs[i] = seq
			}
		}
		t.mu.Unlock()
		select {
		case t.kick <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.mu.Lock()
		t.sent--
		if i >= 0 {
			t.seqs = t.seqs[:i]
		}
		t.mu.Unlock()
		return fmt.Errorf("line %d: %w", lineNo, err)
	}
	return nil
}

// settled reports whether every sent line was acknowledged or failed.
func (t *pubTally) settled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.finished == t.sent
}

// report says how far the run got, for a run that stopped early.
func (t *pubTally) report(read int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	msg := fmt.Sprintf("the relay acknowledged %d of the %d lines read", t.acked, read)
	if open := t.sent - t.finished; open > 0 {
		msg += fmt.Sprintf("; %d more were sent and may still be published", open)
	}
	return msg
}

// writeSeqs prints the sequence numbers of the lines acknowledged, in
// input order, up to the first line that was not.
func (t *pubTally) writeSeqs(out io.Writer) error {
	t.mu.Lock()
	seqs := append([]uint64(nil), t.seqs...)
	t.mu.Unlock()
	bw := bufio.NewWriter(out)
	for _, s := range seqs {
		if s == 0 {
			break
		}
		fmt.Fprintln(bw, s)
	}
	return bw.Flush()
}

func pubLines(ctx context.Context, o *relayClientFlags, channel string, in io.Reader, out io.Writer, printSeq bool) error {
	c, err := o.dial(ctx, channel)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted while connecting to the relay; nothing was published")
		}
		return err
	}
	defer c.Close()
	m, err := c.JoinPublisher(ctx, channel)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted while joining channel %s; nothing was published", channel)
		}
		return o.joinError(channel, err)
	}
	defer m.Leave()
	maxEvent := c.MaxEvent()

	// Lines are read on a goroutine of their own, so that a signal or the
	// end of the membership stops the command while it waits for input.
	// The goroutine ends at the end of in, on a read error, or once stop
	// is closed (a read that blocks is not interrupted: in the command the
	// process exits).
	lines := make(chan []byte, 256)
	stop := make(chan struct{})
	defer close(stop)
	var readErr error // set before lines is closed
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		// Room for a line of the largest event and its "\r\n"; a longer
		// line is refused below, or by the scanner.
		limit := maxEvent + 2
		sc.Buffer(make([]byte, 0, min(64<<10, limit)), limit)
		for sc.Scan() {
			select {
			case lines <- append([]byte(nil), sc.Bytes()...):
			case <-stop:
				return
			}
		}
		readErr = sc.Err()
	}()

	t := &pubTally{printSeq: printSeq, kick: make(chan struct{}, 1)}
	read := 0 // lines read
	var failed error
	for lines != nil || !t.settled() {
		select {
		case line, ok := <-lines:
			switch {
			case !ok:
				lines = nil
				if errors.Is(readErr, bufio.ErrTooLong) {
					failed = fmt.Errorf("line %d is longer than the relay's largest event (%d bytes, the relay's --max-event)", read+1, maxEvent)
				} else if readErr != nil {
					failed = fmt.Errorf("read stdin: %w", readErr)
				}
			case len(line) > maxEvent:
				read++
				lines = nil
				failed = fmt.Errorf("line %d is %d bytes, longer than the relay's largest event (%d bytes, the relay's --max-event)", read, len(line), maxEvent)
			default:
				read++
				// An error after a signal is reported below.
				if err := t.publish(ctx, m, read, line); err != nil && ctx.Err() == nil {
					lines = nil
					failed = err
				}
			}
		case <-t.kick:
		case <-m.Done():
			if printSeq {
				t.writeSeqs(out)
			}
			return fmt.Errorf("%w; %s", membershipEnded(channel, m.Err()), t.report(read))
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			if printSeq {
				t.writeSeqs(out)
			}
			return fmt.Errorf("interrupted: %s", t.report(read))
		}
	}
	if failed != nil {
		return failed
	}
	t.mu.Lock()
	firstErr := t.firstErr
	t.mu.Unlock()
	if firstErr != nil {
		return firstErr
	}
	if printSeq {
		if err := t.writeSeqs(out); err != nil {
			return err
		}
	}
	slog.Debug("pub: done", "channel", channel, "events", read)
	return nil
}
