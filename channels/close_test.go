package channels_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/relay"
)

// TestCloseDuringJoin: an Acquire still joining when Close runs returns
// ErrClosed, not a Live whose membership Close has left, and the
// membership it got is left.
func TestCloseDuringJoin(t *testing.T) {
	srv, err := relay.NewServer(relay.ServerConfig{Listen: "127.0.0.1:0", AllowCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	addr := srv.Addr().String()
	h := channels.NewHub(func(ctx context.Context, driver string, params map[string]string) (transport.Driver, error) {
		return relay.Dial(ctx, relay.ClientConfig{Addr: params["address"]})
	}, channels.Options{JoinTimeout: 5 * time.Second})
	t.Cleanup(func() { h.Close() })

	entered, gate := make(chan struct{}), make(chan struct{})
	sp := spec(addr, "a")
	sp.Check = func(string, transport.Guarantee) error {
		close(entered)
		<-gate // hold the join until Close has begun
		return nil
	}
	type result struct {
		l   *channels.Live
		err error
	}
	res := make(chan result, 1)
	go func() {
		l, err := h.Acquire(context.Background(), sp)
		res <- result{l, err}
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- h.Close() }()
	// Close marks the hub closed at once, then waits for the join.
	waitFor(t, 5*time.Second, func() error {
		if _, err := h.Acquire(context.Background(), spec(addr, "b")); !errors.Is(err, channels.ErrClosed) {
			return fmt.Errorf("hub not closed yet (Acquire: %v)", err)
		}
		return nil
	})
	close(gate)
	select {
	case r := <-res:
		if !errors.Is(r.err, channels.ErrClosed) {
			t.Fatalf("Acquire joining during Close returned error %v (Live %t), want ErrClosed", r.err, r.l != nil)
		}
		if r.l != nil {
			t.Fatal("Acquire returned a Live with ErrClosed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Acquire still joining")
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	waitFor(t, 5*time.Second, func() error {
		for _, c := range srv.Channels() {
			if c.Members != 0 {
				return fmt.Errorf("channel %s still has %d members", c.Name, c.Members)
			}
		}
		return nil
	})
}

// waitFor polls f until it returns nil or wait has passed.
func waitFor(t *testing.T, wait time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", wait, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
