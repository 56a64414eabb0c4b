package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// TestMemberDoneAndErr: Done is closed and Err says why once a membership
// ends, by the relay removing the channel, by Leave or by the client's
// Close; while it lasts Err is nil.
func TestMemberDoneAndErr(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true})
	c := dialClient(t, s.Addr().String())
	m, err := c.JoinMember(ctxT(t), "doomed", &logHandler{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Err(); err != nil {
		t.Fatalf("Err of a live membership: %v", err)
	}
	select {
	case <-m.Done():
		t.Fatal("Done closed while the membership lasts")
	default:
	}
	if err := c.RemoveChannel(ctxT(t), "doomed"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the channel was removed")
	}
	var re *Error
	if err := m.Err(); !errors.As(err, &re) || re.Code != CodeRemoved || !errors.Is(err, transport.ErrNoChannel) {
		t.Fatalf("Err after removal: %v", err)
	}

	left, err := c.JoinMember(ctxT(t), "left", &logHandler{})
	if err != nil {
		t.Fatal(err)
	}
	left.Leave()
	select {
	case <-left.Done():
	default:
		t.Fatal("Done not closed by Leave")
	}
	if err := left.Err(); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Err after Leave: %v", err)
	}

	c2 := dialClient(t, s.Addr().String())
	closed, err := c2.JoinMember(ctxT(t), "left", &logHandler{})
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	select {
	case <-closed.Done():
	default:
		t.Fatal("Done not closed by the client's Close")
	}
	if err := closed.Err(); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Err after Close: %v", err)
	}
}

// epochHandler records the client's epoch at each Restore.
type epochHandler struct {
	logHandler
	c      *Client
	emu    sync.Mutex // protects epochs
	epochs []uint64
}

func (h *epochHandler) Restore(cp []byte, seq uint64) error {
	h.emu.Lock()
	h.epochs = append(h.epochs, h.c.Epoch())
	h.emu.Unlock()
	return h.logHandler.Restore(cp, seq)
}

func (h *epochHandler) restoreEpochs() []uint64 {
	h.emu.Lock()
	defer h.emu.Unlock()
	return append([]uint64(nil), h.epochs...)
}

// restartServer closes s and starts a relay with cfg on s's address.
func restartServer(t *testing.T, s *Server, cfg ServerConfig) *Server {
	t.Helper()
	addr := s.Addr().String()
	s.Close()
	cfg.Listen = addr
	var s2 *Server
	waitFor(t, 5*time.Second, func() error {
		var err error
		if s2, err = NewServer(withLogger(cfg)); err != nil {
			return err
		}
		if err := s2.Start(ctxT(t)); err != nil {
			s2.Close()
			return err
		}
		return nil
	})
	t.Cleanup(func() { s2.Close() })
	return s2
}

// TestClientWarnsOnEpochChange: a client that reconnects to a relay with
// a new epoch (an in-memory relay restarted) logs a warning, Epoch
// follows the relay, and the Handler restores the new history's state
// seeing the new epoch; a durable relay that restarts keeps its epoch and
// draws no warning.
func TestClientWarnsOnEpochChange(t *testing.T) {
	const warning = "lost its history"
	t.Run("memory", func(t *testing.T) {
		s := startServer(t, ServerConfig{AllowCreate: true})
		var logs syncBuffer
		c := dialClient(t, s.Addr().String(), func(cfg *ClientConfig) {
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		})
		if c.Epoch() != s.Epoch() {
			t.Fatalf("client epoch %d, relay's %d", c.Epoch(), s.Epoch())
		}
		h := &epochHandler{c: c}
		m, err := c.Join(ctxT(t), "mem", h)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if _, err := m.Publish(ctxT(t), []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		old := s.Epoch()
		s2 := restartServer(t, s, ServerConfig{AllowCreate: true})
		if s2.Epoch() == old {
			t.Fatal("the restarted in-memory relay kept its epoch")
		}
		waitFor(t, 10*time.Second, func() error {
			if ep := h.restoreEpochs(); len(ep) != 2 || ep[1] != s2.Epoch() {
				return fmt.Errorf("epochs seen by Restore %v, want [%d %d]", ep, old, s2.Epoch())
			}
			return nil
		})
		if c.Epoch() != s2.Epoch() {
			t.Fatalf("client epoch %d after the restart, relay's %d", c.Epoch(), s2.Epoch())
		}
		out := logs.String()
		if !strings.Contains(out, "level=WARN") || !strings.Contains(out, warning) ||
			!strings.Contains(out, fmt.Sprintf("old_epoch=%d", old)) || !strings.Contains(out, fmt.Sprintf("epoch=%d", s2.Epoch())) {
			t.Fatalf("no warning of the new epoch in the client's log:\n%s", out)
		}
	})
	t.Run("durable", func(t *testing.T) {
		cfg := ServerConfig{AllowCreate: true, DataDir: t.TempDir()}
		s := startServer(t, cfg)
		var logs syncBuffer
		c := dialClient(t, s.Addr().String(), func(cfg *ClientConfig) {
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		})
		m, err := c.Join(ctxT(t), "disk", &logHandler{})
		if err != nil {
			t.Fatal(err)
		}
		old := s.Epoch()
		s2 := restartServer(t, s, cfg)
		if _, err := m.Publish(ctxT(t), []byte("after")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, func() error {
			if !strings.Contains(logs.String(), "relay: reconnected") {
				return fmt.Errorf("no reconnection logged yet")
			}
			return nil
		})
		if s2.Epoch() != old || c.Epoch() != old {
			t.Fatalf("epochs %d (relay) %d (client), want %d", s2.Epoch(), c.Epoch(), old)
		}
		if out := logs.String(); strings.Contains(out, warning) {
			t.Fatalf("a warning of a new epoch after a durable restart:\n%s", out)
		}
	})
}

// TestClientMaxEvent: MaxEvent is the limit the relay announced, and
// Publish refuses a larger event without sending it.
func TestClientMaxEvent(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true, MaxEvent: 100})
	c := dialClient(t, s.Addr().String())
	if got := c.MaxEvent(); got != 100 {
		t.Fatalf("MaxEvent %d, want 100", got)
	}
	m, err := c.JoinPublisher(ctxT(t), "small")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Publish(ctxT(t), make([]byte, 100)); err != nil {
		t.Fatalf("an event at the limit: %v", err)
	}
	if _, err := m.Publish(ctxT(t), make([]byte, 101)); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("an event over the limit: %v", err)
	}
}

// TestDialHandshakeStopsWithContext: Dial to something that accepts the
// connection but never answers the hello returns as soon as its context
// ends, not at the handshake deadline.
func TestDialHandshakeStopsWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns []net.Conn
		defer func() {
			for _, nc := range conns {
				nc.Close()
			}
		}()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, nc) // held open, never answered
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := time.AfterFunc(300*time.Millisecond, cancel)
	defer stop.Stop()
	start := time.Now()
	_, err = Dial(ctx, ClientConfig{Addr: ln.Addr().String(), Logger: testLogger()})
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Dial took %v after its context ended", took)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial to a silent peer: %v", err)
	}
}
