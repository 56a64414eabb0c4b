package relay

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// TestCompactionDurable: the relay asks a member for checkpoints, deletes
// the log before them, and a restart serves joiners from checkpoint + tail.
func TestCompactionDurable(t *testing.T) {
	dir := t.TempDir()
	cfg := ServerConfig{DataDir: dir, AllowCreate: true, CompactEvents: 50, NoSync: true}
	s := startServer(t, cfg)
	c := dialClient(t, s.Addr().String())
	h := &logHandler{}
	m, err := c.Join(ctxT(t), "cp", h)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 500; i++ {
		if _, err := m.Publish(ctxT(t), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	ch := s.channel("cp")
	waitFor(t, 5*time.Second, func() error {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		if ch.cpSeq < 400 {
			return fmt.Errorf("checkpoint at %d", ch.cpSeq)
		}
		return nil
	})
	c.Close()
	s.Close()
	st, err := openStore(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	_, chans, _, err := st.load()
	st.close()
	if err != nil {
		t.Fatal(err)
	}
	if len(chans) != 1 || chans[0].cpSeq < 400 || len(chans[0].events) > 100 {
		t.Fatalf("store not compacted: %d channels, checkpoint at %d, %d events", len(chans), chans[0].cpSeq, len(chans[0].events))
	}
	if got := chans[0].cpSeq + uint64(len(chans[0].events)); got != 500 {
		t.Fatalf("checkpoint + tail reach %d, want 500", got)
	}
	s2 := startServer(t, withLogger(cfg))
	c2 := dialClient(t, s2.Addr().String())
	h2 := &logHandler{}
	if _, err := c2.Join(ctxT(t), "cp", h2); err != nil {
		t.Fatal(err)
	}
	// Join returns once the state is restored; the log after the stored
	// checkpoint follows as events.
	waitFor(t, 5*time.Second, func() error {
		state, last := h2.snapshot()
		if last != 500 || len(state) != 500 || state[499] != "500:500" {
			return fmt.Errorf("joiner after restart at %d with %d entries", last, len(state))
		}
		return nil
	})
	h2.mu.Lock()
	defer h2.mu.Unlock()
	if h2.dup != 0 || h2.gap != 0 {
		t.Fatalf("joiner after restart: %d duplicates, %d gaps", h2.dup, h2.gap)
	}
}

// blockingCkpt answers checkpoint requests only after a long time.
type blockingCkpt struct {
	logHandler
	delay time.Duration
}

func (b *blockingCkpt) Checkpoint() ([]byte, error) {
	time.Sleep(b.delay)
	return b.logHandler.Checkpoint()
}

// TestCheckpointTimeoutSkipsMember: a member that does not answer in time
// is skipped; the joiner gets its state from the next one.
func TestCheckpointTimeoutSkipsMember(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true, CheckpointTimeout: 200 * time.Millisecond})
	slow := &blockingCkpt{delay: 3 * time.Second}
	a := dialClient(t, s.Addr().String())
	ma, err := a.Join(ctxT(t), "to", slow)
	if err != nil {
		t.Fatal(err)
	}
	b := dialClient(t, s.Addr().String())
	hb := &logHandler{}
	if _, err := b.Join(ctxT(t), "to", hb); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		if _, err := ma.Publish(ctxT(t), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, func() error {
		if _, last := hb.snapshot(); last != 20 {
			return fmt.Errorf("at %d", last)
		}
		return nil
	})
	// Make the slow member the most up to date candidate: ask repeatedly.
	for k := 0; k < 3; k++ {
		c := dialClient(t, s.Addr().String())
		hc := &logHandler{}
		start := time.Now()
		if _, err := c.Join(ctxT(t), "to", hc); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("join took %v: the unresponsive member was not skipped", d)
		}
		if st, last := hc.snapshot(); last != 20 || len(st) != 20 {
			t.Fatalf("joiner at %d with %d entries", last, len(st))
		}
		c.Close()
	}
}

// TestChannelsWatchAndRemove: clients learn of created and removed
// channels; members of a removed channel get ErrNoChannel.
func TestChannelsWatchAndRemove(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true, Channels: []transport.ChannelInfo{{Name: "a", Comment: "first"}}})
	c := dialClient(t, s.Addr().String())
	w, stop := c.Watch()
	defer stop()
	if err := c.CreateChannel(ctxT(t), transport.ChannelInfo{Name: "b", ID: "0123456789ABCDEF0123456789ABCDEF"}); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateChannel(ctxT(t), transport.ChannelInfo{Name: "b"}); !errors.Is(err, ErrExists) {
		t.Fatalf("create twice: %v", err)
	}
	select {
	case ch := <-w:
		if ch.Kind != ChannelAdded || ch.Info.Name != "b" {
			t.Fatalf("change %+v", ch)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification")
	}
	list, err := c.Channels(ctxT(t))
	if err != nil || len(list) != 2 || list[0].Comment != "first" || list[1].ID == "" {
		t.Fatalf("list %+v %v", list, err)
	}
	m, err := c.Join(ctxT(t), "b", &logHandler{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveChannel(ctxT(t), "b"); err != nil {
		t.Fatal(err)
	}
	select {
	case ch := <-w:
		if ch.Kind != ChannelRemoved || ch.Info.Name != "b" {
			t.Fatalf("change %+v", ch)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no removal notification")
	}
	waitFor(t, 5*time.Second, func() error {
		if _, err := m.Publish(ctxT(t), []byte("x")); !errors.Is(err, transport.ErrNoChannel) {
			return fmt.Errorf("publish to removed channel: %v", err)
		}
		return nil
	})
	s2 := startServer(t, ServerConfig{})
	c2 := dialClient(t, s2.Addr().String())
	if _, err := c2.Join(ctxT(t), "nope", &logHandler{}); !errors.Is(err, transport.ErrNoChannel) {
		t.Fatalf("join of a missing channel: %v", err)
	}
}

// TestMemoryRelayRestart: an in-memory relay forgets everything on restart;
// members reconnect, are told by a fresh state (Restore), and go on.
func TestMemoryRelayRestart(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true})
	addr := s.Addr().String()
	c := dialClient(t, addr)
	h := &logHandler{}
	m, err := c.Join(ctxT(t), "mem", h)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := m.Publish(ctxT(t), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	var s2 *Server
	waitFor(t, 5*time.Second, func() error {
		var err error
		s2, err = NewServer(ServerConfig{Listen: addr, AllowCreate: true, Logger: testLogger()})
		if err != nil {
			return err
		}
		if err := s2.Start(ctxT(t)); err != nil {
			return err
		}
		return nil
	})
	defer s2.Close()
	seq, err := m.Publish(ctxT(t), []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	if seq != 1 {
		t.Fatalf("first event after the restart got seq %d", seq)
	}
	waitFor(t, 5*time.Second, func() error {
		if st, last := h.snapshot(); last != 1 || len(st) != 1 {
			return fmt.Errorf("at %d with %v", last, st)
		}
		return nil
	})
	if h.restores != 2 {
		t.Fatalf("restores %d, want 2 (join and the relay's new history)", h.restores)
	}
}

// TestJoinByID: a channel with a name and an ID is the same channel under
// both keys; each member hears it under the key it joined with.
func TestJoinByID(t *testing.T) {
	const id = "00000000000000000000000000000001"
	s := startServer(t, ServerConfig{AllowCreate: true, Channels: []transport.ChannelInfo{{Name: "Text_1", ID: id}}})
	a := dialClient(t, s.Addr().String())
	b := dialClient(t, s.Addr().String())
	ha, hb := &logHandler{}, &logHandler{}
	ma, err := a.Join(ctxT(t), id, ha)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := b.Join(ctxT(t), "Text_1", hb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ma.Publish(ctxT(t), []byte("by id")); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Publish(ctxT(t), []byte("by name")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		for _, h := range []*logHandler{ha, hb} {
			if st, _ := h.snapshot(); len(st) != 2 {
				return fmt.Errorf("%v", st)
			}
		}
		return nil
	})
	// A third joins by ID and gets its state from the member that joined
	// by name (or the other way round).
	c := dialClient(t, s.Addr().String())
	hc := &logHandler{}
	if _, err := c.Join(ctxT(t), id, hc); err != nil {
		t.Fatal(err)
	}
	if st, last := hc.snapshot(); last != 2 || len(st) != 2 {
		t.Fatalf("joiner at %d: %v", last, st)
	}
	list, _ := a.Channels(ctxT(t))
	if len(list) != 1 {
		t.Fatalf("one channel expected, got %+v", list)
	}
	if err := a.CreateChannel(ctxT(t), transport.ChannelInfo{Name: "other", ID: id}); !errors.Is(err, ErrExists) {
		t.Fatalf("a second channel with the same ID: %v", err)
	}
}
