package logic

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

func deliver(o *Object, seq uint64, s string) {
	o.Deliver(transport.Event{Seq: seq, Data: []byte(s)})
}

func readAll(t *testing.T, r *Reader) string {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	for r.Ready() {
		n, err := r.Read(context.Background(), buf)
		if err != nil {
			break
		}
		out = append(out, buf[:n]...)
	}
	return string(out)
}

func TestStreamHistoryAndReaders(t *testing.T) {
	o := New(Config{Kind: Stream, History: 2})
	deliver(o, 1, "a")
	deliver(o, 2, "b\n")
	deliver(o, 3, "c")
	r := o.NewReader()
	if got := readAll(t, r); got != "b\nc\n" {
		t.Fatalf("snapshot = %q, want the last two events", got)
	}
	deliver(o, 4, "d")
	if got := readAll(t, r); got != "d\n" {
		t.Fatalf("after event = %q", got)
	}
	cp, err := o.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	o2 := New(Config{Kind: Stream, History: 2})
	if err := o2.Restore(cp, o.Seq()); err != nil {
		t.Fatal(err)
	}
	if got, want := string(o2.Snapshot()), "c\nd\n"; got != want {
		t.Fatalf("restored snapshot = %q, want %q", got, want)
	}
	if o2.Seq() != 4 {
		t.Fatalf("restored seq = %d", o2.Seq())
	}
}

func TestPureStreamBlocksUntilEvent(t *testing.T) {
	o := New(Config{Kind: Stream})
	deliver(o, 1, "before")
	r := o.NewReader()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 100)
		n, err := r.Read(context.Background(), buf)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	select {
	case s := <-got:
		t.Fatalf("read returned %q before any event", s)
	case <-time.After(50 * time.Millisecond):
	}
	deliver(o, 2, "x")
	select {
	case s := <-got:
		if s != "x\n" {
			t.Fatalf("read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read did not wake on an event")
	}
}

func TestReadContextAndClose(t *testing.T) {
	o := New(Config{Kind: Stream})
	r := o.NewReader()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.Read(ctx, make([]byte, 10)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read with ended context: %v", err)
	}
	deliver(o, 1, "last")
	o.Close()
	if got := readAll(t, r); got != "last\n" {
		t.Fatalf("queued data lost at close: %q", got)
	}
	if _, err := r.Read(context.Background(), make([]byte, 10)); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

func TestReadWholeEvents(t *testing.T) {
	o := New(Config{Kind: Stream})
	r := o.NewReader()
	deliver(o, 1, "aaaa")
	deliver(o, 2, "bbbb")
	buf := make([]byte, 7)
	n, _ := r.Read(context.Background(), buf)
	if string(buf[:n]) != "aaaa\n" {
		t.Fatalf("first read %q: want one whole event", buf[:n])
	}
	big := New(Config{Kind: Stream})
	rb := big.NewReader()
	deliver(big, 1, "0123456789")
	n, _ = rb.Read(context.Background(), make([]byte, 4))
	if n != 4 {
		t.Fatalf("an event larger than the buffer must be split, got %d", n)
	}
	if got := readAll(t, rb); got != "456789\n" {
		t.Fatalf("rest %q", got)
	}
}

func TestOverrun(t *testing.T) {
	o := New(Config{Kind: Stream, ReaderLimit: 10})
	r := o.NewReader()
	deliver(o, 1, "12345")
	deliver(o, 2, "67890")
	got := readAll(t, r)
	if got != "12345\n" {
		t.Fatalf("got %q", got)
	}
	if _, err := r.Read(context.Background(), make([]byte, 10)); !errors.Is(err, ErrOverrun) {
		t.Fatalf("want ErrOverrun, got %v", err)
	}
	v := New(Config{Kind: Variable, ReaderLimit: 10})
	rv := v.NewReader()
	deliver(v, 1, "12345")
	deliver(v, 2, "67890")
	if got := readAll(t, rv); got != "67890\n" {
		t.Fatalf("variable reader over its bound must see the newest value, got %q", got)
	}
}

func TestVariableAndTextState(t *testing.T) {
	for _, k := range []Kind{Variable, Text} {
		o := New(Config{Kind: k})
		if o.Snapshot() != nil {
			t.Fatalf("%v: empty object has a snapshot", k)
		}
		deliver(o, 1, "one")
		deliver(o, 2, "two\nlines\n")
		cp, _ := o.Checkpoint()
		o2 := New(Config{Kind: k})
		r := o2.NewReader()
		if err := o2.Restore(cp, 2); err != nil {
			t.Fatal(err)
		}
		if got := string(o2.Snapshot()); got != "two\nlines\n" {
			t.Fatalf("%v: restored %q", k, got)
		}
		_ = r
		if err := New(Config{Kind: Stream, History: 1}).Restore(cp, 2); err == nil {
			t.Fatalf("a stream accepted a %v checkpoint", k)
		}
	}
}

type recPub struct {
	mu     sync.Mutex
	events []string
	fail   error
}

func (p *recPub) PublishBatch(ctx context.Context, evs [][]byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	for _, e := range evs {
		p.events = append(p.events, string(e))
	}
	return nil
}

func TestStreamWriterLines(t *testing.T) {
	p := &recPub{}
	w := New(Config{Kind: Stream}).NewWriter(p)
	ctx := context.Background()
	for _, s := range []string{"he", "llo\nwor", "ld\n\nx", "y"} {
		if n, err := w.Write(ctx, []byte(s)); err != nil || n != len(s) {
			t.Fatalf("write %q: %d %v", s, n, err)
		}
	}
	if fmt.Sprint(p.events) != "[hello world ]" {
		t.Fatalf("events %q", p.events)
	}
	if err := w.Flush(ctx); err != nil || len(p.events) != 3 {
		t.Fatalf("flush must not publish a partial line: %v %q", err, p.events)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if p.events[3] != "xy" {
		t.Fatalf("partial line at close: %q", p.events)
	}
	p.fail = errors.New("relay down")
	w2 := New(Config{Kind: Stream}).NewWriter(p)
	if _, err := w2.Write(ctx, []byte("a\n")); err == nil {
		t.Fatal("write succeeded while publishing failed")
	}
}

func TestValueWriter(t *testing.T) {
	p := &recPub{}
	w := New(Config{Kind: Variable}).NewWriter(p)
	ctx := context.Background()
	w.Write(ctx, []byte("4"))
	w.Write(ctx, []byte("2\n"))
	if len(p.events) != 0 {
		t.Fatal("a variable published before close")
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.events) != "[42]" {
		t.Fatalf("events %q", p.events)
	}
	if err := w.Close(ctx); err != nil || len(p.events) != 1 {
		t.Fatal("a second close published again")
	}
	tw := New(Config{Kind: Text}).NewWriter(p)
	tw.Write(ctx, []byte("a\nb\n"))
	tw.Flush(ctx)
	if p.events[1] != "a\nb\n" {
		t.Fatalf("text must keep its newlines: %q", p.events[1])
	}
}

func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add(encodeList([]entry{{1, []byte("a")}, {2, nil}, {5, []byte("ccc")}}))
	f.Add(encodeValue([]byte("v")))
	f.Add([]byte{tagList, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		if items, err := decodeList(b); err == nil {
			if !bytes.Equal(encodeList(items), b) {
				// Non-canonical varints may decode; re-encoding must
				// still decode to the same items.
				again, err := decodeList(encodeList(items))
				if err != nil || len(again) != len(items) {
					t.Fatalf("round trip failed: %v", err)
				}
			}
		}
		if v, err := decodeValue(b); err == nil && !bytes.Equal(encodeValue(v), b) {
			t.Fatal("value round trip")
		}
	})
}

// TestCatchUpReplaysOrEnds: a member that fell behind is restored from a
// checkpoint; its stream readers get the events they missed from the
// history, or are ended when the history does not reach back.
func TestCatchUpReplaysOrEnds(t *testing.T) {
	src := New(Config{Kind: Stream, History: 5})
	for i := uint64(1); i <= 8; i++ {
		deliver(src, i, fmt.Sprint("e", i))
	}
	cp, _ := src.Checkpoint() // holds e4..e8

	behind := New(Config{Kind: Stream, History: 5})
	for i := uint64(1); i <= 5; i++ {
		deliver(behind, i, fmt.Sprint("e", i))
	}
	r := behind.NewReader()
	readAll(t, r) // the snapshot
	if err := behind.Restore(cp, 8); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, r); got != "e6\ne7\ne8\n" {
		t.Fatalf("catch-up replayed %q, want the three missed events", got)
	}

	far := New(Config{Kind: Stream, History: 5})
	deliver(far, 1, "e1")
	rf := far.NewReader()
	readAll(t, rf)
	if err := far.Restore(cp, 8); err != nil {
		t.Fatal(err)
	}
	if _, err := rf.Read(context.Background(), make([]byte, 100)); !errors.Is(err, ErrOverrun) {
		t.Fatalf("a reader with an unrecoverable gap: %v, want ErrOverrun", err)
	}
}

// TestDeliverBatchIsDeliverEach: a run of events in one DeliverBatch call
// leaves every kind of object, its checkpoint and its readers as the same
// events one by one do.
func TestDeliverBatchIsDeliverEach(t *testing.T) {
	for _, kind := range []Kind{Stream, Variable, Text} {
		t.Run(fmt.Sprint(kind), func(t *testing.T) {
			each, batch := New(Config{Kind: kind, History: 3}), New(Config{Kind: kind, History: 3})
			re, rb := each.NewReader(), batch.NewReader()
			var evs []transport.Event
			for i := 1; i <= 7; i++ {
				ev := transport.Event{Seq: uint64(i), Data: []byte(fmt.Sprintf("e%d", i))}
				each.Deliver(ev)
				evs = append(evs, ev)
			}
			before := batch.ModTime()
			batch.DeliverBatch(evs[:2])
			batch.DeliverBatch(nil)
			batch.DeliverBatch(evs[2:])
			if got, want := readAll(t, rb), readAll(t, re); got != want || got == "" {
				t.Fatalf("reader after the batches got %q; one by one: %q", got, want)
			}
			if batch.Seq() != 7 || batch.Seq() != each.Seq() {
				t.Fatalf("seq %d after the batches, %d one by one", batch.Seq(), each.Seq())
			}
			cb, _ := batch.Checkpoint()
			ce, _ := each.Checkpoint()
			if !bytes.Equal(cb, ce) {
				t.Fatalf("checkpoint after the batches %q; one by one %q", cb, ce)
			}
			if after := batch.ModTime(); after.Before(before) {
				t.Fatalf("mtime went back: %v before, %v after", before, after)
			}
		})
	}
}
