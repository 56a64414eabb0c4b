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

// dial connects to the relay; channel, if set, gets the token.
func (o *relayClientFlags) dial(ctx context.Context, channel string) (*relay.Client, error) {
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
		return nil, fmt.Errorf("%w (is the relay running at %s? start one with 'liveobjects relay')", err, cfg.Addr)
	}
	return c, nil
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

func pubLines(ctx context.Context, o *relayClientFlags, channel string, in io.Reader, out io.Writer, printSeq bool) error {
	c, err := o.dial(ctx, channel)
	if err != nil {
		return err
	}
	defer c.Close()
	m, err := c.JoinPublisher(ctx, channel)
	if err != nil {
		return err
	}
	defer m.Leave()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		seqs     []uint64
	)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), relay.DefaultMaxEvent+1)
	n := 0
	for sc.Scan() {
		line := append([]byte(nil), sc.Bytes()...)
		i := n
		n++
		if printSeq {
			seqs = append(seqs, 0)
		}
		wg.Add(1)
		err := m.PublishAsync(ctx, line, func(seq uint64, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("line %d: %w", i+1, err)
			}
			if printSeq {
				seqs[i] = seq
			}
		})
		if err != nil {
			wg.Done()
			wg.Wait()
			return fmt.Errorf("line %d: %w", i+1, err)
		}
	}
	if err := sc.Err(); err != nil {
		wg.Wait()
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line %d is longer than the largest event (%d bytes)", n+1, relay.DefaultMaxEvent)
		}
		return fmt.Errorf("read stdin: %w", err)
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if printSeq {
		bw := bufio.NewWriter(out)
		for _, s := range seqs {
			fmt.Fprintln(bw, s)
		}
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	slog.Debug("pub: done", "channel", channel, "events", n)
	return nil
}
