package channels_test

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/relay"
)

// TestCancelledJoinerDoesNotFailOthers: when the user whose Acquire is
// joining a channel gives up (Ctrl-C on a blocked read), another user
// waiting for the same join must not get that user's cancellation: it
// joins by itself.
func TestCancelledJoinerDoesNotFailOthers(t *testing.T) {
	addr := startRelay(t)
	gate := make(chan struct{})
	first := make(chan struct{})
	var dials atomic.Int32
	h := channels.NewHub(func(ctx context.Context, driver string, params map[string]string) (transport.Driver, error) {
		if dials.Add(1) == 1 {
			// The first dial is slow: the relay is far away.
			close(first)
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return relay.Dial(ctx, relay.ClientConfig{Addr: params["address"]})
	}, channels.Options{JoinTimeout: 5 * time.Second})
	t.Cleanup(func() { h.Close() })

	ctx1, cancel1 := context.WithCancel(context.Background())
	res1 := make(chan error, 1)
	go func() {
		_, err := h.Acquire(ctx1, spec(addr, "a"))
		res1 <- err
	}()
	<-first // the first user is dialing
	res2 := make(chan error, 1)
	var l2 *channels.Live
	go func() {
		var err error
		l2, err = h.Acquire(context.Background(), spec(addr, "a"))
		res2 <- err
	}()
	waitWaiter(t) // the second user waits for the first join
	cancel1()
	if err := <-res1; err == nil {
		t.Fatal("cancelled Acquire succeeded")
	}
	select {
	case err := <-res2:
		if err != nil {
			t.Fatalf("second user failed with the first one's cancellation: %v", err)
		}
		l2.Release()
	case <-time.After(10 * time.Second):
		t.Fatal("second user still waiting")
	}
}

// waitWaiter waits until a goroutine is blocked in Hub.Acquire itself,
// waiting for a join that another Acquire runs (the joining one is
// blocked in the dial function, below Acquire, not in it).
func waitWaiter(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for time.Now().Before(deadline) {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			// The goroutine's header says it blocks in a select, and
			// its innermost frame is Acquire.
			lines := strings.Split(g, "\n")
			if len(lines) > 1 && strings.Contains(lines[0], "[select") && strings.Contains(lines[1], "channels.(*Hub).Acquire(") {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no Acquire came to wait for the join in progress")
}
