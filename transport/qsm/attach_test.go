package qsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

func attach(t testing.TB, s *Service) *Client {
	t.Helper()
	c, err := s.Attach(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Attached clients and socket clients share one group: every event
// reaches every member, in order per sender, whatever link it takes.
func TestAttach(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 2)
	ctx := context.Background()
	clients := []*Client{attach(t, cl.svcs[0]), dial(t, cl.svcs[0].Addr()), attach(t, cl.svcs[1])}
	var recs []*recorder
	var ms []*Member
	for _, c := range clients {
		r := newRecorder(true)
		m, err := c.JoinMember(ctx, "chat", r)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
		ms = append(ms, m)
	}
	waitMembers(t, ms, 2)
	if got, want := clients[0].NodeID(), cl.svcs[0].NodeID(); got != want {
		t.Fatalf("attached client names node %x, want %x", got, want)
	}
	const n = 3000
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, i := range []int{0, 2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < n; k++ {
				if err := ms[i].PublishAsync(ctx, []byte(fmt.Sprintf("%d:%d", i, k))); err != nil {
					errs <- err
					return
				}
			}
			errs <- ms[i].Flush(ctx)
		}()
	}
	wg.Wait()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for ri, r := range recs {
		r.waitCount(t, 2*n, 20*time.Second)
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("client %d: %v", ri, p)
		}
		r.mu.Lock()
		next := map[string]int{}
		for _, ev := range r.events {
			var from, k int
			if _, err := fmt.Sscanf(string(ev.Data), "%d:%d", &from, &k); err != nil {
				t.Fatalf("client %d got %q", ri, ev.Data)
			}
			if k != next[ev.Sender] {
				t.Fatalf("client %d: from %s got %q, want event %d", ri, ev.Sender, ev.Data, next[ev.Sender])
			}
			next[ev.Sender]++
		}
		r.mu.Unlock()
		if len(next) != 2 {
			t.Fatalf("client %d heard %d senders, want 2", ri, len(next))
		}
	}
	// Requests answered over the attached link.
	st, err := clients[0].ServiceStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Delivered < 2*2*n {
		t.Fatalf("service 0 counts %d deliveries, want at least %d", st.Delivered, 2*2*n)
	}
	if st.Clients != 2 || st.Attached != 1 {
		t.Fatalf("service 0 counts %d clients, %d attached; want 2, 1 of them attached", st.Clients, st.Attached)
	}
	chans, err := clients[2].Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(chans) != 1 || chans[0].Name != "chat" {
		t.Fatalf("channels = %+v, want chat", chans)
	}
	// A closed attached client is no longer counted.
	clients[0].Close()
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if st := cl.svcs[0].Stats(); st.Clients != 1 || st.Attached != 0 {
			return fmt.Errorf("after closing the attached client: %d clients, %d attached; want 1, 0", st.Clients, st.Attached)
		}
		return nil
	})
}

// gate is a handler that holds every call until it is opened.
type gate struct {
	*recorder
	open chan struct{}
}

func (g *gate) Deliver(ev transport.Event) {
	<-g.open
	g.recorder.Deliver(ev)
}

// An attached client whose handler stalls must not stall the service:
// its workers' queue stays near the delivery queue's size (the service
// refuses data beyond it and repairs it later), and once the handler
// goes on every event arrives, in order.
func TestAttachSlowHandler(t *testing.T) {
	cfg := testConfig(t)
	cfg.DeliveryQueue = 64 << 10
	cfg.Window = 64
	cl := newCluster(t, cfg, 2)
	ctx := context.Background()
	slow := attach(t, cl.svcs[1])
	g := &gate{recorder: newRecorder(false), open: make(chan struct{})}
	var opened sync.Once
	release := func() { opened.Do(func() { close(g.open) }) }
	defer release() // before the clients close, even when the test fails
	ms, err := slow.JoinMember(ctx, "feed", g)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := attach(t, cl.svcs[0]).JoinMember(ctx, "feed", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	waitMembers(t, []*Member{ms, pub}, 2)
	const n = 2000
	data := make([]byte, 1024)
	done := make(chan error, 1)
	go func() {
		for k := 0; k < n; k++ {
			if err := pub.PublishAsync(ctx, data); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	queued := func() int64 {
		var q int64
		for _, w := range slow.workers {
			q += w.bytes.Load()
		}
		return q
	}
	// While the handler holds, the service still answers and the queue
	// stays bounded.
	var peak int64
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		peak = max(peak, queued())
	}
	if _, err := slow.ServiceStats(ctx); err != nil {
		t.Fatalf("service of the stalled client does not answer: %v", err)
	}
	// Beyond the delivery queue, a service may still hand over what it
	// holds ahead of a gap that one datagram fills: a receive window of
	// 4 x Window messages (socket clients' queues overshoot alike).
	if limit := int64(cfg.DeliveryQueue) + 4*int64(cfg.Window)*1024 + 64<<10; peak > limit {
		t.Fatalf("stalled client holds %d bytes, want at most %d", peak, limit)
	}
	if peak < int64(cfg.DeliveryQueue) {
		t.Fatalf("stalled client holds %d bytes: the publisher did not fill its queue", peak)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	g.waitCount(t, n, 30*time.Second)
	if p := g.problems(); len(p) > 0 {
		t.Fatal(p)
	}
	if q := queued(); q != 0 {
		t.Fatalf("%d bytes still counted as queued after every delivery", q)
	}
}

// A service that closes ends its attached clients: their calls fail
// with transport.ErrClosed, and closing them afterwards is fine.
func TestAttachServiceClose(t *testing.T) {
	cfg := testConfig(t)
	cl := newCluster(t, cfg, 1)
	ctx := context.Background()
	s := cl.svcs[0]
	c, err := s.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.JoinMember(ctx, "x", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, err := m.Publish(ctx, []byte("late")); !errors.Is(err, transport.ErrClosed) {
			return fmt.Errorf("publish after the service closed: %v, want ErrClosed", err)
		}
		return nil
	})
	if _, err := c.Join(ctx, "y", newRecorder(false)); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("join after the service closed: %v, want ErrClosed", err)
	}
	c.Close()
	if _, err := s.Attach(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("attach to a closed service: %v, want ErrClosed", err)
	}
	s2, err := NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Attach(ctx); err == nil {
		t.Fatal("attach to a service not started: no error")
	}
}

// borrowChecker is a transport.Borrower that checks each payload during
// its Deliver call, slowly now and then, and (against the Borrower's
// rules, to see what it was lent) keeps every payload it was handed.
type borrowChecker struct {
	*recorder
	event func(int) []byte
	next  int
	wrong []string
	lent  [][]byte
}

func (b *borrowChecker) Deliver(ev transport.Event) {
	b.recorder.mu.Lock()
	k := b.next
	b.next++
	b.recorder.mu.Unlock()
	if k%200 == 0 {
		time.Sleep(5 * time.Millisecond) // events queue up behind this one
	}
	b.recorder.mu.Lock()
	if want := b.event(k); !bytes.Equal(ev.Data, want) && len(b.wrong) < 5 {
		b.wrong = append(b.wrong, fmt.Sprintf("event %d read %.12q... during its call, want %.12q...", k, ev.Data, want))
	}
	b.lent = append(b.lent, ev.Data)
	b.recorder.mu.Unlock()
	b.recorder.Deliver(ev)
}

func (*borrowChecker) BorrowsData() {}

// An attached client lends a transport.Borrower the service's own copy of
// each payload, which stays as it is until the handler has returned (the
// block it is cut from is not reused before), even while the handler is
// slow and the stream goes on; a handler of the same client that is not
// a Borrower gets copies that stay its own. The borrower's payloads are
// reused once it has returned: that shows they were lent, not copied. A
// dialed client, whose payloads arrive in a buffer it reuses, lends its
// borrowers copies cut from blocks that are reused the same way.
func TestAttachBorrower(t *testing.T) {
	for _, dialed := range []bool{false, true} {
		t.Run(fmt.Sprintf("dialed=%t", dialed), func(t *testing.T) { testBorrower(t, dialed) })
	}
}

func testBorrower(t *testing.T, dialed bool) {
	cfg := testConfig(t)
	cfg.Window = 1024
	cl := newCluster(t, cfg, 2)
	ctx := context.Background()
	const n, size = 20000, 1000
	event := func(i int) []byte { return patterned(i, size) }
	var rc *Client
	if dialed {
		rc = dial(t, cl.svcs[1].Addr())
	} else {
		rc = attach(t, cl.svcs[1])
	}
	borrower := &borrowChecker{recorder: newRecorder(false), event: event}
	owner := newRecorder(true)
	mb, err := rc.JoinMember(ctx, "lend", borrower)
	if err != nil {
		t.Fatal(err)
	}
	mo, err := rc.JoinMember(ctx, "lend", owner)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := attach(t, cl.svcs[0]).JoinMember(ctx, "lend", newRecorder(false))
	if err != nil {
		t.Fatal(err)
	}
	waitMembers(t, []*Member{mb, mo, pub}, 2)
	for i := range n {
		if err := pub.PublishAsync(ctx, event(i)); err != nil {
			t.Fatal(err)
		}
	}
	borrower.waitCount(t, n, 60*time.Second)
	owner.waitCount(t, n, 60*time.Second)
	for _, r := range []*recorder{borrower.recorder, owner} {
		if p := r.problems(); len(p) > 0 {
			t.Fatalf("out of order: %v", p)
		}
	}
	borrower.mu.Lock()
	wrong, lent := borrower.wrong, borrower.lent
	borrower.mu.Unlock()
	if len(wrong) > 0 {
		t.Fatalf("a lent payload changed before its handler returned: %v", wrong)
	}
	owner.mu.Lock()
	defer owner.mu.Unlock()
	for i, ev := range owner.events {
		if !bytes.Equal(ev.Data, event(i)) {
			t.Fatalf("an owned payload changed after its call: event %d reads %.12q..., want %.12q...", i, ev.Data, event(i))
		}
	}
	reused := 0
	for i, d := range lent {
		if !bytes.Equal(d, event(i)) {
			reused++
		}
	}
	if reused == 0 {
		t.Fatalf("none of %d lent payloads was reused after its call: the borrower got copies", len(lent))
	}
	t.Logf("%d of %d lent payloads were reused after their calls", reused, len(lent))
}
