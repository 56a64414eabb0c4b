package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// freezer is a TCP proxy in front of the relay that can go silent without
// closing anything, as a cut network or a host that vanished does: bytes
// are read and dropped in both directions, and the connections stay open.
// New connections made while it is frozen are closed at once.
type freezer struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	accept atomic.Int64 // connections accepted
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(f.close)
	return f
}

func (f *freezer) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.accept.Add(1)
		if f.frozen.Load() {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, u)
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pipe(u, c)
		go f.pipe(c, u)
	}
}

// pipe copies src to dst while not frozen; frozen, it drops what it reads.
func (f *freezer) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !f.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			}
			return
		}
	}
}

func (f *freezer) close() {
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// TestHeartbeatFindsSilentRelay: a quiet but healthy connection is kept
// (pings are answered); a relay that goes silent without closing the
// connection is dropped after three heartbeats and the client reconnects
// and resumes, losing nothing.
func TestHeartbeatFindsSilentRelay(t *testing.T) {
	s := startServer(t, ServerConfig{Channels: []transport.ChannelInfo{{Name: "chat"}}})
	const beat = 100 * time.Millisecond
	fz := startFreezer(t, s.Addr().String())
	c := dialClient(t, fz.ln.Addr().String(), func(cfg *ClientConfig) { cfg.Heartbeat = beat; cfg.MaxBackoff = 50 * time.Millisecond })
	h := &logHandler{}
	m, err := c.Join(ctxT(t), "chat", h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Publish(ctxT(t), []byte("before")); err != nil {
		t.Fatal(err)
	}
	// Quiet for ten heartbeats: the pings keep the connection.
	time.Sleep(10 * beat)
	if n := fz.accept.Load(); n != 1 || !c.Connected() {
		t.Fatalf("a quiet, healthy connection was dropped: %d connections, connected %v", n, c.Connected())
	}

	// Silence: nothing passes, nothing is closed.
	fz.frozen.Store(true)
	frozeAt := time.Now()
	waitFor(t, 5*time.Second, func() error {
		if c.Connected() {
			return fmt.Errorf("the client still holds the connection after %v of silence", time.Since(frozeAt).Round(time.Millisecond))
		}
		return nil
	})
	// The last pong came at most a beat and a half before the freeze.
	if took := time.Since(frozeAt); took < silentBeats*beat-3*beat/2 || took > 20*beat {
		t.Fatalf("the client dropped the connection %v after the relay went silent; want about %d heartbeats (%v)", took, silentBeats, silentBeats*beat)
	}
	// Reconnecting fails while the relay is away; publishing waits for it.
	done := make(chan error, 1)
	go func() {
		_, err := m.Publish(ctxT(t), []byte("during"))
		done <- err
	}()
	time.Sleep(5 * beat)
	fz.frozen.Store(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("publish across the silence: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("publish did not complete after the relay was heard again")
	}
	if _, err := m.Publish(ctxT(t), []byte("after")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		st, last := h.snapshot()
		if last < 3 {
			return fmt.Errorf("delivered up to %d, want 3 (%q)", last, st)
		}
		return nil
	})
	st, last := h.snapshot()
	h.mu.Lock()
	dup, gap := h.dup, h.gap
	h.mu.Unlock()
	if last != 3 || dup != 0 || gap != 0 {
		t.Fatalf("after the silence: last %d, %d duplicates, %d gaps, state %q", last, dup, gap, st)
	}
}

// TestInFlightBound: publishes beyond MaxInFlight wait for an
// acknowledgement; the wait ends with the caller's context or with Close.
func TestInFlightBound(t *testing.T) {
	s := startServer(t, ServerConfig{Channels: []transport.ChannelInfo{{Name: "chat"}}})
	fz := startFreezer(t, s.Addr().String())
	c := dialClient(t, fz.ln.Addr().String(), func(cfg *ClientConfig) { cfg.MaxInFlight = 8; cfg.Heartbeat = -1 })
	m, err := c.JoinMember(ctxT(t), "chat", &logHandler{})
	if err != nil {
		t.Fatal(err)
	}
	fz.frozen.Store(true) // no acknowledgement comes back
	var acked atomic.Int64
	for i := 0; i < 8; i++ {
		if err := m.PublishAsync(ctxT(t), []byte("x"), func(uint64, error) { acked.Add(1) }); err != nil {
			t.Fatalf("publish %d of 8 in flight: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := m.PublishAsync(ctx, []byte("x"), func(uint64, error) {}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a ninth publish with 8 in flight returned %v, want it to wait until its context ends", err)
	}
	waiting := make(chan error, 1)
	go func() { waiting <- m.PublishAsync(context.Background(), []byte("x"), func(uint64, error) {}) }()
	select {
	case err := <-waiting:
		t.Fatalf("a publish beyond the bound returned %v without waiting", err)
	case <-time.After(100 * time.Millisecond):
	}
	c.Close()
	select {
	case err := <-waiting:
		if !errors.Is(err, transport.ErrClosed) {
			t.Fatalf("a waiting publish ended with %v at Close, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting publish did not end at Close")
	}
	if n := acked.Load(); n != 8 {
		t.Fatalf("%d of the 8 publishes in flight were completed at Close, want all (with an error)", n)
	}
}
