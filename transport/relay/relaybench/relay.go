package relaybench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/relay"
)

// RelaySystem runs an in-process relay (in memory, or durable in a
// temporary directory) with one client per publisher and subscriber, each
// over its own TCP connection.
type RelaySystem struct {
	// Durable keeps the log in bbolt (group commit, fsync per commit).
	Durable bool
	// NoSync skips fsync in durable mode.
	NoSync bool
	// Logger for the relay and clients (default: discard).
	Logger *slog.Logger
	n      atomic.Int64
}

// Name is relay-mem, relay-durable or relay-durable-nosync.
func (s *RelaySystem) Name() string {
	switch {
	case !s.Durable:
		return "relay-mem"
	case s.NoSync:
		return "relay-durable-nosync"
	}
	return "relay-durable"
}

type relayPub struct {
	srv     *relay.Server
	dir     string
	clients []*relay.Client
	m       *relay.Member
	errc    chan error
}

// benchHandler is a subscriber whose state is the latest event, as a
// variable's is: the relay's compaction asks it for checkpoints during
// the run, as it asks members of every channel. The driver calls its
// methods one at a time.
type benchHandler struct {
	sub     int
	deliver func(int, []byte)
	last    []byte
}

func (h *benchHandler) Deliver(ev transport.Event) {
	h.deliver(h.sub, ev.Data)
	h.last = ev.Data
}

func (h *benchHandler) Checkpoint() ([]byte, error)         { return h.last, nil }
func (h *benchHandler) Restore(cp []byte, seq uint64) error { h.last = cp; return nil }

func (s *RelaySystem) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Open starts the relay and joins the clients.
func (s *RelaySystem) Open(ctx context.Context, subs int, deliver func(int, []byte)) (Publisher, error) {
	p := &relayPub{errc: make(chan error, 1)}
	cfg := relay.ServerConfig{Listen: "127.0.0.1:0", AllowCreate: true, Logger: s.logger(), NoSync: s.NoSync}
	if s.Durable {
		dir, err := os.MkdirTemp("", "relaybench-")
		if err != nil {
			return nil, err
		}
		p.dir = dir
		cfg.DataDir = dir
	}
	srv, err := relay.NewServer(cfg)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.srv = srv
	if err := srv.Start(ctx); err != nil {
		p.Close()
		return nil, err
	}
	channel := fmt.Sprintf("bench-%d", s.n.Add(1))
	dial := func() (*relay.Client, error) {
		c, err := relay.Dial(ctx, relay.ClientConfig{Addr: srv.Addr().String(), Logger: s.logger(), MaxInFlight: 4096})
		if err == nil {
			p.clients = append(p.clients, c)
		}
		return c, err
	}
	for i := 0; i < subs; i++ {
		c, err := dial()
		if err != nil {
			p.Close()
			return nil, err
		}
		if _, err := c.Join(ctx, channel, &benchHandler{sub: i, deliver: deliver}); err != nil {
			p.Close()
			return nil, err
		}
	}
	c, err := dial()
	if err != nil {
		p.Close()
		return nil, err
	}
	m, err := c.JoinPublisher(ctx, channel)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.m = m
	return p, nil
}

func (p *relayPub) Publish(ctx context.Context, data []byte) error {
	select {
	case err := <-p.errc:
		return err
	default:
	}
	return p.m.PublishAsync(ctx, data, func(_ uint64, err error) {
		if err != nil {
			select {
			case p.errc <- err:
			default:
			}
		}
	})
}

func (p *relayPub) Close() error {
	for _, c := range p.clients {
		c.Close()
	}
	if p.srv != nil {
		p.srv.Close()
	}
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
	return nil
}

// blob is a Handler whose state is one blob.
type blob struct{ data []byte }

func (b *blob) Deliver(transport.Event)             {}
func (b *blob) Checkpoint() ([]byte, error)         { return b.data, nil }
func (b *blob) Restore(cp []byte, seq uint64) error { b.data = cp; return nil }

// JoinCheckpoint measures joining a channel whose state (held by a member)
// is n bytes.
func JoinCheckpoint(ctx context.Context, durable bool, n int) (time.Duration, error) {
	cfg := relay.ServerConfig{Listen: "127.0.0.1:0", AllowCreate: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if durable {
		dir, err := os.MkdirTemp("", "relaybench-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		cfg.DataDir = dir
	}
	srv, err := relay.NewServer(cfg)
	if err != nil {
		return 0, err
	}
	defer srv.Close()
	if err := srv.Start(ctx); err != nil {
		return 0, err
	}
	ccfg := relay.ClientConfig{Addr: srv.Addr().String(), Logger: cfg.Logger}
	a, err := relay.Dial(ctx, ccfg)
	if err != nil {
		return 0, err
	}
	defer a.Close()
	donor := &blob{}
	if _, err := a.Join(ctx, "state", donor); err != nil {
		return 0, err
	}
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i)
	}
	donor.data = data
	b, err := relay.Dial(ctx, ccfg)
	if err != nil {
		return 0, err
	}
	defer b.Close()
	joiner := &blob{}
	start := time.Now()
	if _, err := b.Join(ctx, "state", joiner); err != nil {
		return 0, err
	}
	d := time.Since(start)
	if len(joiner.data) != n {
		return 0, fmt.Errorf("relaybench: joiner got %d bytes, want %d", len(joiner.data), n)
	}
	return d, nil
}
