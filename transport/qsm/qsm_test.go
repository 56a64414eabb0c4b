package qsm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

func TestLoopbackDelivery(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 3)
	ctx := context.Background()
	var recs []*recorder
	var pubm transport.Member
	for i, s := range cl.svcs {
		c := dial(t, s.Addr())
		r := newRecorder(true)
		m, err := c.Join(ctx, "chat", r)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
		if i == 0 {
			pubm = m
		}
	}
	// Wait until every service sees all three nodes in the group.
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		v := cl.coord.View()
		if len(v.Regions) != 1 || len(v.Regions[0].Members) != 3 {
			return fmt.Errorf("view %d: %d regions", v.Number, len(v.Regions))
		}
		for _, s := range cl.svcs {
			if s.Stats().View < v.Number {
				return fmt.Errorf("service behind")
			}
		}
		return nil
	})
	const n = 2000
	for i := 0; i < n; i++ {
		seq, err := pubm.Publish(ctx, []byte(fmt.Sprintf("msg %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i+1) {
			t.Fatalf("publish %d got seq %d", i, seq)
		}
	}
	for i, r := range recs {
		r.waitCount(t, n, 10*time.Second)
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("receiver %d: %v", i, p)
		}
		r.mu.Lock()
		for j, ev := range r.events {
			if want := fmt.Sprintf("msg %d", j); string(ev.Data) != want {
				t.Fatalf("receiver %d event %d = %q, want %q", i, j, ev.Data, want)
			}
		}
		r.mu.Unlock()
	}
}

func TestCloseIdempotent(t *testing.T) {
	cfg := testConfig(t)
	// Never started.
	c0, _ := NewCoordinator(cfg)
	s0, _ := NewService(cfg)
	for i := 0; i < 2; i++ {
		if err := c0.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s0.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Started, with a client and a member.
	cl := newCluster(t, cfg, 1)
	c := dial(t, cl.svcs[0].Addr())
	m, err := c.Join(context.Background(), "x", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := m.Leave(); err != nil {
			t.Fatal(err)
		}
		c.Close()
		cl.svcs[0].Close()
		cl.coord.Close()
	}
	if _, err := m.Publish(context.Background(), []byte("x")); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
	if _, err := c.Join(context.Background(), "y", newRecorder(false)); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("join after close: %v", err)
	}
}

// batchRecorder is a recorder that takes runs of events (a BatchHandler).
type batchRecorder struct {
	*recorder
	batches, inBatches int // guarded by recorder.mu
}

func (b *batchRecorder) DeliverBatch(evs []transport.Event) {
	b.recorder.mu.Lock()
	b.batches++
	b.inBatches += len(evs)
	b.recorder.mu.Unlock()
	for _, ev := range evs {
		b.recorder.Deliver(ev)
	}
}

// TestBatchDelivery: a BatchHandler gets runs of a sender's events in one
// call, still every event once and in FIFO order, beside a Handler that
// takes them one by one.
func TestBatchDelivery(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 2)
	ctx := context.Background()
	pc := dial(t, cl.svcs[0].Addr())
	pm, err := pc.Join(ctx, "chat", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	rc := dial(t, cl.svcs[1].Addr())
	one := newRecorder(true)
	batch := &batchRecorder{recorder: newRecorder(true)}
	if _, err := rc.Join(ctx, "chat", batch); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Join(ctx, "chat2", one); err != nil {
		t.Fatal(err)
	}
	pm2, err := pc.Join(ctx, "chat2", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		v := cl.coord.View()
		for _, s := range cl.svcs {
			if s.Stats().View < v.Number {
				return fmt.Errorf("service behind")
			}
		}
		for _, r := range v.Regions {
			if len(r.Members) != 2 {
				return fmt.Errorf("view %d: a region of %d nodes", v.Number, len(r.Members))
			}
		}
		return nil
	})
	const n = 5000
	for i := 0; i < n; i++ {
		for _, m := range []transport.Member{pm, pm2} {
			if err := m.(*Member).PublishAsync(ctx, []byte(fmt.Sprintf("msg %d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, r := range []*recorder{batch.recorder, one} {
		r.waitCount(t, n, 20*time.Second)
		if p := r.problems(); len(p) > 0 {
			t.Fatal(p)
		}
		r.mu.Lock()
		for j, ev := range r.events {
			if want := fmt.Sprintf("msg %d", j); string(ev.Data) != want {
				r.mu.Unlock()
				t.Fatalf("event %d = %q, want %q", j, ev.Data, want)
			}
		}
		r.mu.Unlock()
	}
	batch.mu.Lock()
	defer batch.mu.Unlock()
	if batch.batches == 0 || batch.inBatches < 2*batch.batches || batch.count != n {
		t.Fatalf("%d events, %d of them in %d batches", batch.count, batch.inBatches, batch.batches)
	}
	t.Logf("%d events, %d of them in %d batches", batch.count, batch.inBatches, batch.batches)
}

// TestLocalUplink checks that a client dialing its service's uplink
// address takes the service's local socket when the service has one, and
// TCP when it has none, and that events flow either way.
func TestLocalUplink(t *testing.T) {
	if localUplinkName("127.0.0.1:1") == "" {
		t.Skip("local uplink sockets are Linux only")
	}
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 1)
	off := cfg
	off.UplinkLocal = false
	cl.addService(off)
	local, tcp := cl.svcs[0], cl.svcs[1]
	if want := localUplinkName(local.Addr()); local.LocalAddr() != want {
		t.Fatalf("local socket %q, want %q", local.LocalAddr(), want)
	}
	if tcp.LocalAddr() != "" {
		t.Fatalf("uplink_local=false still opened %q", tcp.LocalAddr())
	}
	ctx := context.Background()
	cl1, cl2 := dial(t, local.Addr()), dial(t, tcp.Addr())
	if _, ok := cl1.conn.(*net.UnixConn); !ok {
		t.Fatalf("client of the service with a local socket uses %T", cl1.conn)
	}
	if _, ok := cl2.conn.(*net.TCPConn); !ok {
		t.Fatalf("client of the service without one uses %T", cl2.conn)
	}
	r1, r2 := newRecorder(true), newRecorder(true)
	m1, err := cl1.Join(ctx, "uplinks", r1)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := cl2.Join(ctx, "uplinks", r2)
	if err != nil {
		t.Fatal(err)
	}
	waitMembers(t, []*Member{m1.(*Member), m2.(*Member)}, 2)
	const n = 500
	for i := 0; i < n; i++ {
		m := m1
		if i%2 == 1 {
			m = m2
		}
		if _, err := m.Publish(ctx, []byte(fmt.Sprintf("event %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range []*recorder{r1, r2} {
		r.waitCount(t, n, 10*time.Second)
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("client %d: %v", i, p)
		}
	}
	// The local socket goes with the service: a client dialing afterwards
	// gets a clear error instead of a socket nobody serves.
	addr := local.Addr()
	local.Close()
	ctx2, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if c, err := Dial(ctx2, addr); err == nil {
		c.Close()
		t.Fatal("dialed a closed service")
	} else if !strings.Contains(err.Error(), "qsm service") {
		t.Fatalf("dial error does not say what to start: %v", err)
	}
}
