package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// testLogger is quiet unless LIVEOBJECTS_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("LIVEOBJECTS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer starts a real relay on a random loopback port.
func startServer(t testing.TB, cfg ServerConfig) *Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func dialClient(t testing.TB, addr string, mod ...func(*ClientConfig)) *Client {
	t.Helper()
	cfg := ClientConfig{Addr: addr, Logger: testLogger(), MaxBackoff: 200 * time.Millisecond}
	for _, f := range mod {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// logHandler keeps every event it has seen as its state; its checkpoint
// is the list of "seq:data" lines.
type logHandler struct {
	mu        sync.Mutex
	state     []string // "seq:data"
	last      uint64
	delivered []uint64
	restores  int
	noCkpt    bool
	block     chan struct{} // when set, Deliver waits on it
	dup       int
	gap       int
}

func (h *logHandler) Deliver(ev transport.Event) {
	if h.block != nil {
		<-h.block
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ev.Seq <= h.last {
		h.dup++
	} else if ev.Seq != h.last+1 {
		h.gap++
	}
	h.last = ev.Seq
	h.state = append(h.state, fmt.Sprintf("%d:%s", ev.Seq, ev.Data))
	h.delivered = append(h.delivered, ev.Seq)
}

func (h *logHandler) Checkpoint() ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.noCkpt {
		return nil, fmt.Errorf("no checkpoints here")
	}
	if len(h.state) == 0 {
		return nil, nil
	}
	return []byte(strings.Join(h.state, "\n")), nil
}

func (h *logHandler) Restore(cp []byte, seq uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.restores++
	h.state = nil
	if len(cp) > 0 {
		h.state = strings.Split(string(cp), "\n")
	}
	if n := len(h.state); n > 0 {
		last, _ := strconv.ParseUint(strings.SplitN(h.state[n-1], ":", 2)[0], 10, 64)
		if last != seq {
			return fmt.Errorf("checkpoint ends at %d, said %d", last, seq)
		}
	}
	h.last = seq
	return nil
}

func (h *logHandler) snapshot() (state []string, last uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.state...), h.last
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t testing.TB, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("condition not met after %v: %v", d, err)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
