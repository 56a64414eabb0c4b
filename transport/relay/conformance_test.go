package relay_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/conformance"
	"github.com/liveobjects/liveobjects/transport/relay"
)

func quiet() *slog.Logger {
	if os.Getenv("LIVEOBJECTS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func relayFactory(dataDir bool) conformance.Factory {
	return func(t *testing.T) conformance.NewDriver {
		cfg := relay.ServerConfig{Listen: "127.0.0.1:0", AllowCreate: true, Logger: quiet(), CompactEvents: 150}
		if dataDir {
			cfg.DataDir = t.TempDir()
			cfg.NoSync = true
		}
		s, err := relay.NewServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return func(t *testing.T) transport.Driver {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := relay.Dial(ctx, relay.ClientConfig{Addr: s.Addr().String(), Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
	}
}

func TestConformanceMemory(t *testing.T)  { conformance.Run(t, relayFactory(false)) }
func TestConformanceDurable(t *testing.T) { conformance.Run(t, relayFactory(true)) }
