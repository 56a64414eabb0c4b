package conformance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/liveobjects/liveobjects/transport"
)

// Factory starts a fresh world for one test (for the relay: a relay server)
// and returns a function that makes Drivers connected to it, one per
// simulated process. The world and the drivers it made are cleaned up with
// t.Cleanup; the suite also closes drivers itself. Channels the suite joins
// (short printable names) must be joinable without further setup.
type Factory func(t *testing.T) NewDriver

// NewDriver makes one more Driver (one process's worth) in the world.
type NewDriver func(t *testing.T) transport.Driver

// Options tune the suite for slower drivers.
type Options struct {
	// Events is how many events each publisher sends (default 200).
	Events int
	// Timeout bounds how long the suite waits for deliveries (default 20s).
	Timeout time.Duration
}

// Run runs the whole suite against the drivers f makes.
func Run(t *testing.T, f Factory) { RunWith(t, f, Options{}) }

// RunWith is Run with options.
func RunWith(t *testing.T, f Factory, o Options) {
	if o.Events <= 0 {
		o.Events = 200
	}
	if o.Timeout <= 0 {
		o.Timeout = 20 * time.Second
	}
	s := &suite{f: f, o: o}
	t.Run("Basics", s.basics)
	t.Run("TotalOrderExactlyOnce", s.totalOrder)
	t.Run("FIFOPerSender", s.fifo)
	t.Run("StateTransferUnderPublishing", s.stateTransfer)
	t.Run("JoinLeaveRace", s.joinLeaveRace)
	t.Run("ManyChannelsOneConnection", s.manyChannels)
}

type suite struct {
	f Factory
	o Options
}

func (s *suite) drivers(t *testing.T, n int) []transport.Driver {
	t.Helper()
	nd := s.f(t)
	out := make([]transport.Driver, n)
	for i := range out {
		d := nd(t)
		t.Cleanup(func() { d.Close() })
		out[i] = d
	}
	return out
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Recorder is a Handler whose state is the list of events it has seen
// ("sender|data" per event); its checkpoint is that list. It checks the
// Handler contract as it goes: one call at a time, no call after Leave
// returned (when told), sequence numbers increasing under total order.
type Recorder struct {
	mu        sync.Mutex
	state     []string
	seqs      []uint64
	lastSeq   uint64
	restores  int
	restoreAt []uint64
	inCall    atomic.Int32
	left      atomic.Bool
	errs      []string
	total     bool
}

// NewRecorder returns a Recorder; total makes it check that sequence
// numbers follow each other.
func NewRecorder(total bool) *Recorder { return &Recorder{total: total} }

func (r *Recorder) enter() {
	if r.inCall.Add(1) != 1 {
		r.fail("concurrent handler calls")
	}
	if r.left.Load() {
		r.fail("handler call after Leave returned")
	}
}

func (r *Recorder) exit() { r.inCall.Add(-1) }

func (r *Recorder) fail(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) < 10 {
		r.errs = append(r.errs, msg)
	}
}

// Deliver records the event.
func (r *Recorder) Deliver(ev transport.Event) {
	r.enter()
	defer r.exit()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.total && r.lastSeq != 0 && ev.Seq != r.lastSeq+1 {
		if len(r.errs) < 10 {
			r.errs = append(r.errs, fmt.Sprintf("delivered seq %d after %d", ev.Seq, r.lastSeq))
		}
	}
	r.lastSeq = ev.Seq
	r.state = append(r.state, string(ev.Data))
	r.seqs = append(r.seqs, ev.Seq)
}

// Checkpoint returns the recorded list.
func (r *Recorder) Checkpoint() ([]byte, error) {
	r.enter()
	defer r.exit()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.state) == 0 {
		return nil, nil
	}
	return []byte(strconv.Itoa(len(r.state)) + "\n" + strings.Join(r.state, "\n")), nil
}

// Restore replaces the list.
func (r *Recorder) Restore(cp []byte, seq uint64) error {
	r.enter()
	defer r.exit()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.restores++
	r.restoreAt = append(r.restoreAt, seq)
	r.state = nil
	r.lastSeq = seq
	if len(cp) == 0 {
		return nil
	}
	parts := strings.Split(string(cp), "\n")
	n, err := strconv.Atoi(parts[0])
	if err != nil || n != len(parts)-1 {
		return fmt.Errorf("conformance: malformed checkpoint (%d lines, header %q)", len(parts), parts[0])
	}
	r.state = parts[1:]
	return nil
}

// State returns a copy of the recorded list.
func (r *Recorder) State() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.state...)
}

// Len returns how many events the state holds.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.state)
}

// Errors returns contract violations seen so far.
func (r *Recorder) Errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// MarkLeft tells the recorder Leave has returned: any later call is an error.
func (r *Recorder) MarkLeft() { r.left.Store(true) }

func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not done after %v: %v", what, d, err)
}

func checkErrs(t *testing.T, rs ...*Recorder) {
	t.Helper()
	for i, r := range rs {
		if errs := r.Errors(); len(errs) > 0 {
			t.Errorf("member %d broke the handler contract: %v", i, errs)
		}
	}
}

func (s *suite) basics(t *testing.T) {
	ds := s.drivers(t, 1)
	d := ds[0]
	if d.Name() == "" {
		t.Error("Name is empty")
	}
	g := d.Provides()
	t.Logf("driver %s provides %v", d.Name(), g)
	r := NewRecorder(g.Satisfies(transport.TotalOrder))
	m, err := d.Join(ctxFor(t, s.o.Timeout), "conf-basics", r)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if _, err := m.Publish(ctxFor(t, s.o.Timeout), []byte("one")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	waitFor(t, s.o.Timeout, "own event delivered", func() error {
		if r.Len() != 1 {
			return fmt.Errorf("%d events", r.Len())
		}
		return nil
	})
	if err := m.Leave(); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	r.MarkLeft()
	if err := m.Leave(); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
	if _, err := m.Publish(ctxFor(t, s.o.Timeout), []byte("late")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Publish after Leave: got %v, want ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := d.Join(ctxFor(t, s.o.Timeout), "conf-basics", NewRecorder(false)); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Join after Close: got %v, want ErrClosed", err)
	}
	checkErrs(t, r)
}

// publishAll has each member publish n events "p<i>-<k>" concurrently and
// returns the sequence numbers Publish returned.
func publishAll(t *testing.T, ctx context.Context, ms []transport.Member, n int) [][]uint64 {
	t.Helper()
	seqs := make([][]uint64, len(ms))
	var wg sync.WaitGroup
	errc := make(chan error, len(ms))
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < n; k++ {
				seq, err := m.Publish(ctx, []byte(fmt.Sprintf("p%d-%d", i, k)))
				if err != nil {
					errc <- fmt.Errorf("publisher %d event %d: %w", i, k, err)
					return
				}
				seqs[i] = append(seqs[i], seq)
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	return seqs
}

func joinAll(t *testing.T, ds []transport.Driver, channel string, total bool, timeout time.Duration) ([]transport.Member, []*Recorder) {
	t.Helper()
	ms := make([]transport.Member, len(ds))
	rs := make([]*Recorder, len(ds))
	for i, d := range ds {
		rs[i] = NewRecorder(total)
		m, err := d.Join(ctxFor(t, timeout), channel, rs[i])
		if err != nil {
			t.Fatalf("member %d: Join %s: %v", i, channel, err)
		}
		ms[i] = m
	}
	return ms, rs
}

func (s *suite) totalOrder(t *testing.T) {
	ds := s.drivers(t, 3)
	g := ds[0].Provides()
	if !g.Satisfies(transport.Reliable) {
		t.Skipf("driver %s does not provide reliable delivery (%v): exactly-once is not promised", ds[0].Name(), g)
	}
	total := g.Satisfies(transport.TotalOrder)
	ms, rs := joinAll(t, ds, "conf-order", total, s.o.Timeout)
	seqs := publishAll(t, ctxFor(t, s.o.Timeout), ms, s.o.Events)
	want := len(ms) * s.o.Events
	waitFor(t, s.o.Timeout, "every member has every event", func() error {
		for i, r := range rs {
			if n := r.Len(); n < want {
				return fmt.Errorf("member %d has %d of %d", i, n, want)
			}
		}
		return nil
	})
	time.Sleep(50 * time.Millisecond) // let any duplicate arrive
	for i, r := range rs {
		st := r.State()
		if len(st) != want {
			t.Errorf("member %d has %d events, want exactly %d", i, len(st), want)
		}
		seen := map[string]bool{}
		for _, e := range st {
			if seen[e] {
				t.Errorf("member %d got %q twice", i, e)
			}
			seen[e] = true
		}
	}
	if total {
		ref := rs[0].State()
		for i, r := range rs[1:] {
			if st := r.State(); strings.Join(st, ",") != strings.Join(ref, ",") {
				t.Errorf("member %d delivered another order than member 0", i+1)
			}
		}
		// The sequence number Publish returned is the event's position.
		rs[0].mu.Lock()
		pos := map[uint64]string{}
		for k, seq := range rs[0].seqs {
			pos[seq] = rs[0].state[k]
		}
		rs[0].mu.Unlock()
		for i := range seqs {
			for k, seq := range seqs[i] {
				if got, want := pos[seq], fmt.Sprintf("p%d-%d", i, k); got != want {
					t.Errorf("Publish of %s returned seq %d, which delivered %q", want, seq, got)
				}
			}
		}
	}
	checkErrs(t, rs...)
}

func (s *suite) fifo(t *testing.T) {
	ds := s.drivers(t, 2)
	g := ds[0].Provides()
	if !g.Satisfies(transport.FIFO) {
		t.Skipf("driver %s does not provide FIFO order (%v)", ds[0].Name(), g)
	}
	ms, rs := joinAll(t, ds, "conf-fifo", false, s.o.Timeout)
	publishAll(t, ctxFor(t, s.o.Timeout), ms, s.o.Events)
	want := len(ms) * s.o.Events
	waitFor(t, s.o.Timeout, "every member has every event", func() error {
		for i, r := range rs {
			if n := r.Len(); n < want {
				return fmt.Errorf("member %d has %d of %d", i, n, want)
			}
		}
		return nil
	})
	for i, r := range rs {
		next := map[string]int{}
		for _, e := range r.State() {
			p, k, _ := strings.Cut(e, "-")
			n, _ := strconv.Atoi(k)
			if n != next[p] {
				t.Fatalf("member %d: from %s got event %d, expected %d", i, p, n, next[p])
			}
			next[p]++
		}
	}
	checkErrs(t, rs...)
}

func (s *suite) stateTransfer(t *testing.T) {
	ds := s.drivers(t, 5)
	g := ds[0].Provides()
	if !g.Satisfies(transport.StateTransfer) {
		t.Skipf("driver %s does not provide state transfer (%v)", ds[0].Name(), g)
	}
	total := g.Satisfies(transport.TotalOrder)
	ms, rs := joinAll(t, ds[:2], "conf-state", total, s.o.Timeout)
	ctx := ctxFor(t, s.o.Timeout*2)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var published atomic.Int64
	errc := make(chan error, 2)
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := m.Publish(ctx, []byte(fmt.Sprintf("p%d-%d", i, k))); err != nil {
					errc <- err
					return
				}
				published.Add(1)
			}
		}()
	}
	// Joiners arrive one after another while both keep publishing.
	var jrs []*Recorder
	for j := 2; j < len(ds); j++ {
		target := published.Load() + int64(s.o.Events/4+1)
		waitFor(t, s.o.Timeout, "publishing progresses", func() error {
			if published.Load() < target {
				return fmt.Errorf("%d published", published.Load())
			}
			return nil
		})
		r := NewRecorder(total)
		if _, err := ds[j].Join(ctx, "conf-state", r); err != nil {
			t.Fatalf("joiner %d: %v", j, err)
		}
		jrs = append(jrs, r)
	}
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("publisher: %v", err)
	}
	want := int(published.Load())
	all := append(append([]*Recorder(nil), rs...), jrs...)
	waitFor(t, s.o.Timeout, "every member holds every event", func() error {
		for i, r := range all {
			if n := r.Len(); n < want {
				return fmt.Errorf("member %d holds %d of %d", i, n, want)
			}
		}
		return nil
	})
	ref := strings.Join(rs[0].State(), ",")
	for i, r := range all {
		st := r.State()
		if len(st) != want {
			t.Errorf("member %d holds %d events, want %d (missed or duplicated)", i, len(st), want)
		}
		if total && strings.Join(st, ",") != ref {
			t.Errorf("member %d holds a different history than member 0", i)
		}
	}
	for i, r := range jrs {
		if r.restores != 1 {
			t.Errorf("joiner %d restored %d times, want 1", i, r.restores)
		}
	}
	checkErrs(t, all...)
}

func (s *suite) joinLeaveRace(t *testing.T) {
	ds := s.drivers(t, 4)
	g := ds[0].Provides()
	total := g.Satisfies(transport.TotalOrder)
	pm, err := ds[0].Join(ctxFor(t, s.o.Timeout), "conf-race", NewRecorder(total))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, s.o.Timeout*2)
	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := pm.Publish(ctx, []byte(fmt.Sprintf("x-%d", k))); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var recs []*Recorder
	for _, d := range ds[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 8; round++ {
				r := NewRecorder(total)
				m, err := d.Join(ctx, "conf-race", r)
				if err != nil {
					t.Errorf("join round %d: %v", round, err)
					return
				}
				if round%2 == 0 {
					time.Sleep(time.Duration(round) * time.Millisecond)
				}
				// Leave while events arrive; sometimes twice at once.
				var lw sync.WaitGroup
				for k := 0; k < 1+round%2; k++ {
					lw.Add(1)
					go func() { defer lw.Done(); m.Leave() }()
				}
				lw.Wait()
				r.MarkLeft()
				mu.Lock()
				recs = append(recs, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	pubWG.Wait()
	// After all that, a fresh member still gets a consistent state.
	r := NewRecorder(total)
	m, err := ds[1].Join(ctxFor(t, s.o.Timeout), "conf-race", r)
	if err != nil {
		t.Fatalf("final join: %v", err)
	}
	if _, err := m.Publish(ctxFor(t, s.o.Timeout), []byte("final")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s.o.Timeout, "final event", func() error {
		st := r.State()
		switch {
		case total && (len(st) == 0 || st[len(st)-1] != "final"):
			// In one order, "final" comes after every event before it.
			return fmt.Errorf("%d events, the last not \"final\"", len(st))
		case !total && !slices.Contains(st, "final"):
			// FIFO per sender only: the publisher's earlier events may
			// still reach the new member after its own "final".
			return fmt.Errorf("%d events, none of them \"final\"", len(st))
		}
		return nil
	})
	time.Sleep(20 * time.Millisecond)
	checkErrs(t, recs...)
	checkErrs(t, r)
	if g.Satisfies(transport.StateTransfer) {
		// The state holds each x-k once, in order.
		last := -1
		for _, e := range r.State() {
			if e == "final" {
				continue
			}
			k, err := strconv.Atoi(strings.TrimPrefix(e, "x-"))
			if err != nil || k != last+1 {
				t.Fatalf("state has %q after x-%d", e, last)
			}
			last = k
		}
	}
}

func (s *suite) manyChannels(t *testing.T) {
	ds := s.drivers(t, 2)
	total := ds[0].Provides().Satisfies(transport.TotalOrder)
	const nch = 40
	per := max(s.o.Events/10, 5)
	subs := make([]*Recorder, nch)
	pubs := make([]transport.Member, nch)
	ctx := ctxFor(t, s.o.Timeout)
	for i := 0; i < nch; i++ {
		name := fmt.Sprintf("conf-many-%02d", i)
		subs[i] = NewRecorder(total)
		if _, err := ds[0].Join(ctx, name, subs[i]); err != nil {
			t.Fatalf("join %s: %v", name, err)
		}
		m, err := ds[1].Join(ctx, name, NewRecorder(total))
		if err != nil {
			t.Fatalf("join %s: %v", name, err)
		}
		pubs[i] = m
	}
	var wg sync.WaitGroup
	for i, m := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < per; k++ {
				if _, err := m.Publish(ctx, []byte(fmt.Sprintf("c%d-%d", i, k))); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, s.o.Timeout, "every channel delivered", func() error {
		for i, r := range subs {
			if n := r.Len(); n < per {
				return fmt.Errorf("channel %d has %d of %d", i, n, per)
			}
		}
		return nil
	})
	for i, r := range subs {
		for k, e := range r.State() {
			if want := fmt.Sprintf("c%d-%d", i, k); e != want {
				t.Fatalf("channel %d position %d: got %q, want %q", i, k, e, want)
			}
		}
	}
	checkErrs(t, subs...)
	if l, ok := ds[0].(transport.Lister); ok {
		infos, err := l.Channels(ctx)
		if err != nil {
			t.Fatalf("Channels: %v", err)
		}
		found := 0
		for _, in := range infos {
			if strings.HasPrefix(in.Name, "conf-many-") {
				found++
			}
		}
		if found != nch {
			t.Errorf("Channels lists %d of the %d channels", found, nch)
		}
	}
}
