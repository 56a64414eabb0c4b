package micro

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"
)

// fakeClock is a controllable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testLogger() *slog.Logger {
	if os.Getenv("LIVEOBJECTS_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer starts a server in dir (a new temp dir when ""), closed at
// cleanup.
func startServer(t testing.TB, mod func(*ServerConfig)) *Server {
	t.Helper()
	cfg := ServerConfig{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: testLogger(), FloodInterval: time.Second}
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		s.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newLib(t testing.TB, l Local, keys Keys) *Lib {
	lib := NewLib(l, keys)
	t.Cleanup(func() { lib.Close() })
	return lib
}

func mustKeys(t testing.TB) Keys {
	k, err := NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkFor polls f until it returns nil or wait passes.
func checkFor(t testing.TB, wait time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("condition not met after %v: %v", wait, err)
}

func clusterHas(ctx context.Context, l Local, obj Token, want ...Token) error {
	ts, err := clusterOf(ctx, l, obj)
	if err != nil {
		return err
	}
	have := map[Token]bool{}
	for _, t := range ts {
		have[t] = true
	}
	for _, w := range want {
		if !have[w] {
			return fmt.Errorf("cluster of %s lacks %s (has %d)", obj.Short(), w.Short(), len(ts))
		}
	}
	return nil
}
