package relay

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

func TestJoinPublishDeliver(t *testing.T) {
	s := startServer(t, ServerConfig{Channels: []transport.ChannelInfo{{Name: "chat"}}})
	a := dialClient(t, s.Addr().String())
	b := dialClient(t, s.Addr().String())
	ha, hb := &logHandler{}, &logHandler{}
	ma, err := a.Join(ctxT(t), "chat", ha)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := b.Join(ctxT(t), "chat", hb)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 100; i++ {
		m := ma
		if i%2 == 0 {
			m = mb
		}
		seq, err := m.Publish(ctxT(t), []byte(fmt.Sprintf("e%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Fatalf("publish %d got seq %d", i, seq)
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
	sa, _ := ha.snapshot()
	sb, _ := hb.snapshot()
	if fmt.Sprint(sa) != fmt.Sprint(sb) {
		t.Fatalf("members disagree:\n%v\n%v", sa, sb)
	}
	// A third member joins and gets the state from a member.
	c := dialClient(t, s.Addr().String())
	hc := &logHandler{}
	if _, err := c.Join(ctxT(t), "chat", hc); err != nil {
		t.Fatal(err)
	}
	sc, last := hc.snapshot()
	if last != 100 || fmt.Sprint(sc) != fmt.Sprint(sa) {
		t.Fatalf("joiner state at %d: %v", last, sc)
	}
	if hc.restores != 1 {
		t.Fatalf("restores %d", hc.restores)
	}
}

// leaveInside leaves its own membership from inside Deliver.
type leaveInside struct {
	logHandler
	m    func() transport.Member
	done chan struct{}
}

func (h *leaveInside) Deliver(ev transport.Event) {
	h.logHandler.Deliver(ev)
	if ev.Seq == 2 {
		h.m().Leave()
		close(h.done)
	}
}

// TestLeaveFromHandler: Leave (and Close) may be called from a Handler
// without deadlock, and no call follows.
func TestLeaveFromHandler(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true})
	c := dialClient(t, s.Addr().String())
	p := dialClient(t, s.Addr().String())
	// The handler reads the member set after Join returned: share it
	// through a mutex (the causality through the relay is invisible to
	// the race detector).
	var mmu sync.Mutex
	var m transport.Member
	h := &leaveInside{m: func() transport.Member { mmu.Lock(); defer mmu.Unlock(); return m }, done: make(chan struct{})}
	jm, err := c.Join(ctxT(t), "l", h)
	if err != nil {
		t.Fatal(err)
	}
	mmu.Lock()
	m = jm
	mmu.Unlock()
	pm, err := p.Join(ctxT(t), "l", &logHandler{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := pm.Publish(ctxT(t), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Leave from inside the handler did not return")
	}
	time.Sleep(50 * time.Millisecond)
	if _, last := h.snapshot(); last != 2 {
		t.Fatalf("handler called after Leave: last %d", last)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPublisherOnly: a publish-only member gets no state and no events,
// is never asked for a checkpoint, and its events reach the others.
func TestPublisherOnly(t *testing.T) {
	s := startServer(t, ServerConfig{AllowCreate: true})
	p := dialClient(t, s.Addr().String())
	pm, err := p.JoinPublisher(ctxT(t), "po")
	if err != nil {
		t.Fatal(err)
	}
	c := dialClient(t, s.Addr().String())
	h := &logHandler{}
	if _, err := c.Join(ctxT(t), "po", h); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if seq, err := pm.Publish(ctxT(t), []byte(fmt.Sprint(i))); err != nil || seq != uint64(i) {
			t.Fatalf("publish %d: %d %v", i, seq, err)
		}
	}
	waitFor(t, 5*time.Second, func() error {
		if _, last := h.snapshot(); last != 5 {
			return fmt.Errorf("at %d", last)
		}
		return nil
	})
	// A joiner gets its state from the real member, never from the publisher.
	d := dialClient(t, s.Addr().String())
	hd := &logHandler{}
	if _, err := d.Join(ctxT(t), "po", hd); err != nil {
		t.Fatal(err)
	}
	if st, last := hd.snapshot(); last != 5 || len(st) != 5 {
		t.Fatalf("joiner at %d with %v", last, st)
	}
	if pm.Delivered() != 0 {
		t.Fatalf("publisher got deliveries up to %d", pm.Delivered())
	}
	list, _ := p.Channels(ctxT(t))
	if len(list) != 1 || list[0].Members != 3 || list[0].LastSeq != 5 {
		t.Fatalf("channels %+v", list)
	}
	if err := pm.Leave(); err != nil {
		t.Fatal(err)
	}
}

// batchRecorder is a BatchHandler that counts the calls of each kind.
type batchRecorder struct {
	logHandler
	mu2     sync.Mutex
	single  int
	batches int
	largest int
}

func (b *batchRecorder) Deliver(ev transport.Event) {
	b.mu2.Lock()
	b.single++
	b.mu2.Unlock()
	b.logHandler.Deliver(ev)
}

func (b *batchRecorder) DeliverBatch(evs []transport.Event) {
	b.mu2.Lock()
	b.batches++
	b.largest = max(b.largest, len(evs))
	b.mu2.Unlock()
	for _, ev := range evs {
		b.logHandler.Deliver(ev)
	}
}

// TestBatchHandler: a Handler that takes batches gets every event once, in
// order, through DeliverBatch, runs of at most maxBatch.
func TestBatchHandler(t *testing.T) {
	s := startServer(t, ServerConfig{Channels: []transport.ChannelInfo{{Name: "chat"}}})
	a := dialClient(t, s.Addr().String())
	b := dialClient(t, s.Addr().String())
	h := &batchRecorder{}
	if _, err := b.Join(ctxT(t), "chat", h); err != nil {
		t.Fatal(err)
	}
	m, err := a.JoinMember(ctxT(t), "chat", &logHandler{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		wg.Add(1)
		if err := m.PublishAsync(ctxT(t), []byte(fmt.Sprint(i)), func(uint64, error) { wg.Done() }); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	waitFor(t, 10*time.Second, func() error {
		if _, last := h.snapshot(); last != n {
			return fmt.Errorf("delivered up to %d of %d", last, n)
		}
		return nil
	})
	st, _ := h.snapshot()
	for i, e := range st {
		if want := fmt.Sprintf("%d:%d", i+1, i+1); e != want {
			t.Fatalf("event %d is %q, want %q", i, e, want)
		}
	}
	h.mu2.Lock()
	defer h.mu2.Unlock()
	if h.single != 0 || h.batches == 0 || h.largest > maxBatch || h.dup != 0 || h.gap != 0 {
		t.Fatalf("%d single deliveries, %d batches (largest %d, limit %d), %d duplicates, %d gaps", h.single, h.batches, h.largest, maxBatch, h.dup, h.gap)
	}
	t.Logf("%d events in %d batches, the largest of %d", n, h.batches, h.largest)
}
