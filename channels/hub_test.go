package channels_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/objects/logic"
	"github.com/liveobjects/liveobjects/transport"
	"github.com/liveobjects/liveobjects/transport/relay"
)

func startRelay(t *testing.T) string {
	t.Helper()
	s, err := relay.NewServer(relay.ServerConfig{Listen: "127.0.0.1:0", AllowCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr().String()
}

func newHub(t *testing.T, dials *atomic.Int32) *channels.Hub {
	h := channels.NewHub(func(ctx context.Context, driver string, params map[string]string) (transport.Driver, error) {
		dials.Add(1)
		return relay.Dial(ctx, relay.ClientConfig{Addr: params["address"]})
	}, channels.Options{JoinTimeout: 5 * time.Second})
	t.Cleanup(func() { h.Close() })
	return h
}

func spec(addr, ch string) channels.Spec {
	return channels.Spec{Object: "t/" + ch, Driver: "relay", Params: map[string]string{"address": addr}, Channel: ch,
		Logic: logic.Config{Kind: logic.Stream, History: 10}}
}

func TestShareAndLeave(t *testing.T) {
	addr := startRelay(t)
	var dials atomic.Int32
	h := newHub(t, &dials)
	ctx := context.Background()
	var wg sync.WaitGroup
	lives := make([]*channels.Live, 8)
	for i := range lives {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			l, err := h.Acquire(ctx, spec(addr, "a"))
			if err != nil {
				t.Error(err)
				return
			}
			lives[i] = l
		}(i)
	}
	wg.Wait()
	for _, l := range lives[1:] {
		if l != lives[0] {
			t.Fatal("concurrent Acquire of one channel joined twice")
		}
	}
	if _, err := h.Acquire(ctx, spec(addr, "b")); err != nil {
		t.Fatal(err)
	}
	if d := dials.Load(); d != 1 {
		t.Fatalf("%d connections for one relay, want 1", d)
	}
	l := lives[0]
	if err := l.PublishBatch(ctx, [][]byte{[]byte("x"), []byte("y"), []byte("z")}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for string(l.Object().Snapshot()) != "x\ny\nz\n" {
		if time.Now().After(deadline) {
			t.Fatalf("own events not delivered: %q", l.Object().Snapshot())
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := l.Object().NewReader()
	for i := 0; i < len(lives)-1; i++ {
		l.Release()
	}
	if len(h.Joined()) != 2 {
		t.Fatalf("joined %d after partial release", len(h.Joined()))
	}
	l.Release()
	if _, err := r.Read(ctx, make([]byte, 100)); err != nil {
		t.Fatalf("queued data lost at leave: %v", err)
	}
	if _, err := r.Read(ctx, make([]byte, 100)); !errors.Is(err, logic.ErrClosed) {
		t.Fatalf("reader after the last release: %v", err)
	}
	// A new Acquire joins afresh and gets the state back from the relay.
	l2, err := h.Acquire(ctx, spec(addr, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if l2 == l {
		t.Fatal("a left object was handed out again")
	}
	defer l2.Release()
}

func TestCheckRefusesJoin(t *testing.T) {
	addr := startRelay(t)
	var dials atomic.Int32
	h := newHub(t, &dials)
	s := spec(addr, "c")
	want := errors.New("c: needs virtual-synchrony")
	s.Check = func(driver string, provides transport.Guarantee) error {
		if driver != "relay" || !provides.Satisfies(transport.TotalOrder|transport.StateTransfer) {
			t.Errorf("check saw %s %v", driver, provides)
		}
		return want
	}
	if _, err := h.Acquire(context.Background(), s); !errors.Is(err, want) {
		t.Fatalf("Acquire with a failing check: %v", err)
	}
	if len(h.Joined()) != 0 {
		t.Fatal("a refused object stayed joined")
	}
}

func TestDialFailureNotCached(t *testing.T) {
	var dials atomic.Int32
	h := newHub(t, &dials)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := h.Acquire(ctx, spec("127.0.0.1:1", "x"))
	if err == nil {
		t.Fatal("joined over a relay that is not there")
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	h.Acquire(ctx2, spec("127.0.0.1:1", "x"))
	if dials.Load() < 2 {
		t.Fatal("a failed connection was cached")
	}
}

// TestOneMembershipPerChannel: objects of one kind on one channel share
// one live object, whatever history a text asks for (only a stream keeps
// one), and each one's needs are checked against the driver; a stream
// with another history than the one joined is refused with ErrConflict,
// naming both objects, until the first lets go.
func TestOneMembershipPerChannel(t *testing.T) {
	addr := startRelay(t)
	var dials atomic.Int32
	h := newHub(t, &dials)
	ctx := context.Background()
	text := func(obj string, history int) channels.Spec {
		s := spec(addr, "notes")
		s.Object, s.Logic = obj, logic.Config{Kind: logic.Text, History: history}
		return s
	}
	a, err := h.Acquire(ctx, text("channels/notes", 100))
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Acquire(ctx, text("examples/meeting notes", 0))
	if err != nil {
		t.Fatalf("a second text on the channel: %v", err)
	}
	if a != b {
		t.Fatal("two texts on one channel got two live objects")
	}
	// A third object whose needs the driver does not meet is refused,
	// though the channel is joined.
	refuse := text("examples/needs more", 0)
	refuse.Check = func(driver string, provides transport.Guarantee) error {
		return errors.New("needs more than " + driver + " gives")
	}
	if _, err := h.Acquire(ctx, refuse); err == nil || !strings.Contains(err.Error(), "needs more than relay gives") {
		t.Fatalf("an object whose needs are not met, on a joined channel: %v", err)
	}
	a.Release()
	b.Release()

	s1 := spec(addr, "log")
	s1.Object = "channels/log"
	l1, err := h.Acquire(ctx, s1)
	if err != nil {
		t.Fatal(err)
	}
	s2 := spec(addr, "log")
	s2.Object, s2.Logic.History = "examples/short log", 3
	_, err = h.Acquire(ctx, s2)
	if !errors.Is(err, channels.ErrConflict) || !strings.Contains(err.Error(), "examples/short log") ||
		!strings.Contains(err.Error(), "channels/log") || !strings.Contains(err.Error(), "history 10") {
		t.Fatalf("a stream with another history: %v, want ErrConflict naming both objects", err)
	}
	l1.Release()
	l2, err := h.Acquire(ctx, s2)
	if err != nil {
		t.Fatalf("after the first let go: %v", err)
	}
	l2.Release()
}

// TestReadYourWrites: over the relay (a total order), a publish returns
// once this process's replica has applied it, so the value read right
// after a write is the value written.
func TestReadYourWrites(t *testing.T) {
	addr := startRelay(t)
	var dials atomic.Int32
	h := newHub(t, &dials)
	ctx := context.Background()
	sp := spec(addr, "value")
	sp.Logic = logic.Config{Kind: logic.Variable}
	l, err := h.Acquire(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	for i := range 300 {
		v := fmt.Sprintf("v%d", i)
		if err := l.PublishBatch(ctx, [][]byte{[]byte(v)}); err != nil {
			t.Fatal(err)
		}
		if got := string(l.Object().Snapshot()); got != v+"\n" && got != v {
			t.Fatalf("after writing %q the replica holds %q", v, got)
		}
	}
	// Several events at once: the last one is in the replica.
	if err := l.PublishBatch(ctx, [][]byte{[]byte("a"), []byte("b"), []byte("last")}); err != nil {
		t.Fatal(err)
	}
	if got := string(l.Object().Snapshot()); got != "last\n" && got != "last" {
		t.Fatalf("after a batch the replica holds %q", got)
	}
}
