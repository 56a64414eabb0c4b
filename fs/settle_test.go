package fs

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/channels"
	"github.com/liveobjects/liveobjects/objects/logic"
)

// gatedPublisher notes each event once its publish has returned; the
// publish of the event named by hold waits until gate is closed, and
// entered is closed when it begins.
type gatedPublisher struct {
	hold    string
	gate    chan struct{}
	entered chan struct{}

	mu   sync.Mutex
	done []string
}

func (p *gatedPublisher) PublishBatch(ctx context.Context, events [][]byte) error {
	for _, ev := range events {
		if string(ev) == p.hold {
			close(p.entered)
			<-p.gate
		}
		p.mu.Lock()
		p.done = append(p.done, string(ev))
		p.mu.Unlock()
	}
	return nil
}

// TestSettleWaitsForLinesBeingEnded: a closed handle's partial line comes
// before every write to the object that starts after the close, also a
// write that starts while another write is still publishing that line
// (the line is in flight, not yet in the order).
func TestSettleWaitsForLinesBeingEnded(t *testing.T) {
	m := &Mount{cfg: Config{PublishTimeout: 10 * time.Second}}
	live := &channels.Live{}
	p := &gatedPublisher{hold: "c", gate: make(chan struct{}), entered: make(chan struct{})}
	obj := logic.New(logic.Config{Kind: logic.Stream})
	open := func(rel string) *handle {
		return &handle{m: m, rel: rel, live: live, w: obj.NewWriter(p, 0)}
	}
	first, second, third := open("first"), open("second"), open("third")
	ctx := context.Background()
	if _, e := first.Write(ctx, []byte("c"), 0); e != 0 {
		t.Fatal(e)
	}
	if e := first.Flush(ctx); e != 0 {
		t.Fatal(e)
	}
	var wg sync.WaitGroup
	write := func(h *handle, data string) {
		defer wg.Done()
		if _, e := h.Write(ctx, []byte(data), 0); e != 0 {
			t.Errorf("write %q: %v", data, e)
		}
	}
	wg.Add(1)
	go write(second, "d\n") // ends first's line, whose publish waits
	<-p.entered
	wg.Add(1)
	go write(third, "x\n")
	time.Sleep(200 * time.Millisecond) // room for x to overtake c
	close(p.gate)
	wg.Wait()
	got := p.done
	if len(got) != 3 || got[0] != "c" || !slices.Contains(got, "d") || !slices.Contains(got, "x") {
		t.Fatalf("published %q, want c first, then d and x", got)
	}
}

// TestSettleOfOneObjectLeavesOthersAlone: while a write publishes the
// closed partial line of one object (held open), a write to another
// object that has a closed line of its own ends that line and goes
// through.
func TestSettleOfOneObjectLeavesOthersAlone(t *testing.T) {
	m := &Mount{cfg: Config{PublishTimeout: 10 * time.Second}}
	ctx := context.Background()
	type object struct {
		p             *gatedPublisher
		closer, later *handle
	}
	newObject := func(name, hold string) object {
		live := &channels.Live{}
		p := &gatedPublisher{hold: hold, gate: make(chan struct{}), entered: make(chan struct{})}
		obj := logic.New(logic.Config{Kind: logic.Stream})
		o := object{p: p,
			closer: &handle{m: m, rel: name + "/closer", live: live, w: obj.NewWriter(p, 0)},
			later:  &handle{m: m, rel: name + "/later", live: live, w: obj.NewWriter(p, 0)},
		}
		if _, e := o.closer.Write(ctx, []byte(name), 0); e != 0 {
			t.Fatal(e)
		}
		if e := o.closer.Flush(ctx); e != 0 {
			t.Fatal(e)
		}
		return o
	}
	a := newObject("a", "a")
	b := newObject("b", "")
	close(b.p.gate)

	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		if _, e := a.later.Write(ctx, []byte("a2\n"), 0); e != 0 {
			t.Errorf("write to a: %v", e)
		}
	}()
	<-a.p.entered // a's closed line is being published, and held
	bDone := make(chan struct{})
	go func() {
		defer close(bDone)
		if _, e := b.later.Write(ctx, []byte("b2\n"), 0); e != 0 {
			t.Errorf("write to b: %v", e)
		}
	}()
	select {
	case <-bDone:
	case <-time.After(5 * time.Second):
		t.Errorf("a write to b waited for a's closed line")
	}
	close(a.p.gate)
	<-aDone
	<-bDone
	if got := a.p.done; !slices.Equal(got, []string{"a", "a2"}) {
		t.Errorf("a published %q, want a, a2", got)
	}
	if got := b.p.done; !slices.Equal(got, []string{"b", "b2"}) {
		t.Errorf("b published %q, want b, b2", got)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.settling) != 0 || len(m.closedLines) != 0 {
		t.Errorf("left %d settle locks and %d objects' closed lines", len(m.settling), len(m.closedLines))
	}
}
