package relay_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/relay"
)

// blobHandler's state is one big blob.
type blobHandler struct {
	blob    []byte
	seq     uint64
	deliver int
}

func (h *blobHandler) Deliver(ev transport.Event)  { h.deliver++ }
func (h *blobHandler) Checkpoint() ([]byte, error) { return h.blob, nil }
func (h *blobHandler) Restore(cp []byte, seq uint64) error {
	h.blob, h.seq = cp, seq
	return nil
}

// TestJoin64MiBCheckpoint: a joiner receives a 64 MiB checkpoint from a
// member, in chunks, intact.
func TestJoin64MiBCheckpoint(t *testing.T) {
	for _, durable := range []bool{false, true} {
		cfg := relay.ServerConfig{AllowCreate: true, NoSync: true}
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
		time.Sleep(50 * time.Millisecond)
		ha.blob = big
		b := dial(t, s.Addr().String())
		hb := &blobHandler{}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if _, err := b.Join(ctx, "big", hb); err != nil {
			t.Fatal(err)
		}
		t.Logf("durable=%v: joined with a 64 MiB checkpoint in %v", durable, time.Since(start))
		if !bytes.Equal(hb.blob, big) || hb.seq != 1 {
			t.Fatalf("joiner got %d bytes at seq %d", len(hb.blob), hb.seq)
		}
	}
}
