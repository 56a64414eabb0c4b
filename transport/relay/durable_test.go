package relay

import (
	"fmt"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// A relay restarted on the same data directory keeps state and history;
// clients reconnect and resume with no gap and no duplicate.
func TestDurableRestartResume(t *testing.T) {
	dir := t.TempDir()
	cfg := ServerConfig{DataDir: dir, Channels: []transport.ChannelInfo{{Name: "c"}}, Listen: "127.0.0.1:0"}
	s := startServer(t, cfg)
	addr := s.Addr().String()
	a := dialClient(t, addr)
	b := dialClient(t, addr)
	ha, hb := &logHandler{}, &logHandler{}
	ma, err := a.Join(ctxT(t), "c", ha)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Join(ctxT(t), "c", hb); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 50; i++ {
		if _, err := ma.Publish(ctxT(t), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	cfg.Listen = addr
	var s2 *Server
	waitFor(t, 5*time.Second, func() error {
		var err error
		s2, err = NewServer(withLogger(cfg))
		if err != nil {
			return err
		}
		if err := s2.Start(ctxT(t)); err != nil {
			s2.Close()
			return err
		}
		return nil
	})
	t.Cleanup(func() { s2.Close() })
	// Publishing during and after the reconnect.
	for i := 51; i <= 100; i++ {
		seq, err := ma.Publish(ctxT(t), []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Fatalf("seq %d for event %d", seq, i)
		}
	}
	waitFor(t, 5*time.Second, func() error {
		for _, h := range []*logHandler{ha, hb} {
			if _, last := h.snapshot(); last != 100 {
				return fmt.Errorf("last %d", last)
			}
		}
		return nil
	})
	for _, h := range []*logHandler{ha, hb} {
		if h.dup != 0 || h.gap != 0 || h.restores != 1 {
			t.Fatalf("dup %d gap %d restores %d", h.dup, h.gap, h.restores)
		}
	}
	// Nobody online: a joiner gets the stored checkpoint and log.
	a.Close()
	b.Close()
	c := dialClient(t, addr)
	hc := &logHandler{}
	if _, err := c.Join(ctxT(t), "c", hc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		st, last := hc.snapshot()
		if last != 100 || len(st) != 100 || st[99] != "100:100" {
			return fmt.Errorf("joiner at %d with %d entries", last, len(st))
		}
		return nil
	})
}

func withLogger(cfg ServerConfig) ServerConfig {
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	return cfg
}

// TestChannelJoinedByIDThenNamed: a channel created by a join by its ID
// (before the root had its metadata) is, after a restart that names it
// with that ID, the named channel: the relay starts, lists it by its name
// only, and the channel's events are there by name and by ID, also after
// one more restart from what the first one stored.
func TestChannelJoinedByIDThenNamed(t *testing.T) {
	const id = "00000000000000000000000000000002"
	dir := t.TempDir()
	cfg := ServerConfig{DataDir: dir, AllowCreate: true, NoSync: true, Listen: "127.0.0.1:0"}
	s := startServer(t, cfg)
	c := dialClient(t, s.Addr().String())
	m, err := c.Join(ctxT(t), id, &logHandler{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := m.Publish(ctxT(t), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	s.Close()
	for round := range 2 { // and again, from the store the first restart wrote
		cfg.Channels = []transport.ChannelInfo{{Name: "chat", ID: id, Comment: "named"}}
		s2, err := NewServer(withLogger(cfg))
		if err != nil {
			t.Fatalf("restart %d with the channel named: %v", round+1, err)
		}
		if err := s2.Start(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		infos := s2.Channels()
		if len(infos) != 1 || infos[0].Name != "chat" || infos[0].ID != id || infos[0].Comment != "named" {
			t.Fatalf("restart %d: channels %+v, want only chat with ID %s", round+1, infos, id)
		}
		for _, key := range []string{"chat", id} {
			c2 := dialClient(t, s2.Addr().String())
			h := &logHandler{}
			if _, err := c2.Join(ctxT(t), key, h); err != nil {
				t.Fatalf("join %s: %v", key, err)
			}
			waitFor(t, 5*time.Second, func() error {
				if _, last := h.snapshot(); last != 3 {
					return fmt.Errorf("joined by %s: last seq %d, want 3", key, last)
				}
				return nil
			})
			c2.Close()
		}
		s2.Close()
	}
}
