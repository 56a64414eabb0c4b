package relay_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/relay"
)

// blobHandler's state is one big blob.
type blobHandler struct {
	mu   sync.Mutex
	blob []byte
	seq  uint64
}

func (h *blobHandler) Deliver(ev transport.Event) {}
func (h *blobHandler) Checkpoint() ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.blob, nil
}
func (h *blobHandler) Restore(cp []byte, seq uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.blob, h.seq = cp, seq
	return nil
}

// TestJoin64MiBCheckpoint: a joiner receives a 64 MiB checkpoint from a
// member, in chunks, intact.
func TestJoin64MiBCheckpoint(t *testing.T) {
	for _, durable := range []bool{false, true} {
		// A generous timeout: under the race detector 64 MiB is slow, and a
		// member that does not answer in time would (rightly) be skipped.
		cfg := relay.ServerConfig{AllowCreate: true, NoSync: true, CheckpointTimeout: time.Minute}
		if durable {
			cfg.DataDir = t.TempDir()
		}
		s := startInProc(t, cfg)
		big := make([]byte, 64<<20)
		for i := range big {
			big[i] = byte(i * 7)
		}
		a := dial(t, s.Addr().String())
		ha := &blobHandler{}
		ma, err := a.Join(context.Background(), "big", ha)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ma.Publish(context.Background(), []byte("x")); err != nil {
			t.Fatal(err)
		}
		ha.mu.Lock()
		ha.blob = big
		ha.mu.Unlock()
		b := dial(t, s.Addr().String())
		hb := &blobHandler{}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if _, err := b.Join(ctx, "big", hb); err != nil {
			t.Fatal(err)
		}
		t.Logf("durable=%v: joined with a 64 MiB checkpoint in %v", durable, time.Since(start))
		hb.mu.Lock()
		defer hb.mu.Unlock()
		if !bytes.Equal(hb.blob, big) || hb.seq != 1 {
			t.Fatalf("joiner got %d bytes at seq %d", len(hb.blob), hb.seq)
		}
	}
}
